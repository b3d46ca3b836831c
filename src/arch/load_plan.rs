//! What the trainer loads from a frozen checkpoint into the model a config builds, key by
//! key (docs/domain.md §7): named parts of a v5.5 checkpoint through the Frozen → improved
//! Linear index map, the whole model state of any other (`strict=False`, where a size
//! mismatch still raises). An architecture fact: `tvck check` reports it, the trainer
//! follows it, `tvck select` ranks by it.

use std::collections::{HashMap, HashSet};

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use super::{EncoderKind, KeyComparison, KeyShape, LayoutParams, SizeMismatch, VersionId};

/// The parts of a v5.5 checkpoint the config asks for (`encoder_to_load` /
/// `decoder_to_load`); the whole state of a v5.11-family checkpoint ignores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadParts {
    pub encoder_a: bool,
    pub encoder_b: bool,
    pub decoder_a: bool,
}

/// What the trainer would load, key by key.
#[derive(Debug, Clone, Default)]
pub struct LoadPlan {
    /// `whole model state` or the parts named by encoder_to_load / decoder_to_load.
    pub mode: String,
    /// Model keys filled from the checkpoint with the same key.
    pub loaded: Vec<String>,
    /// Model keys filled through the Frozen → improved Linear index map (from, to).
    pub mapped: Vec<(String, String)>,
    /// The model's keys (expected) against the checkpoint's: `matched` counts `loaded` and
    /// `mapped`; `missing` are left at initialisation, `unexpected` are ignored, and each
    /// of `mismatched` makes PyTorch raise.
    pub keys: KeyComparison,
}

/// JSON (docs/json.md, `tvck check`): `loaded` as a count, `size_mismatch` as
/// `[key, checkpoint shape, model shape]`.
impl Serialize for LoadPlan {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("LoadPlan", 6)?;
        st.serialize_field("mode", &self.mode)?;
        st.serialize_field("loaded", &self.loaded.len())?;
        st.serialize_field("mapped", &self.mapped)?;
        st.serialize_field("missing", &self.keys.missing)?;
        st.serialize_field("unexpected", &self.keys.unexpected)?;
        let sizes: Vec<(&str, &[u64], &[u64])> = self
            .keys
            .mismatched
            .iter()
            .map(|m| (m.key.as_str(), m.found.as_slice(), m.expected.as_slice()))
            .collect();
        st.serialize_field("size_mismatch", &sizes)?;
        st.end()
    }
}

impl LoadPlan {
    /// Loads without an error: no size mismatch, and the frozen parts fully provided.
    pub fn fits(&self) -> bool {
        self.keys.mismatched.is_empty() && !self.keys.missing.iter().any(|(k, _)| is_frozen_part(k))
    }

    /// Every model key provided and every checkpoint key used.
    pub fn exact(&self) -> bool {
        self.fits() && self.keys.missing.is_empty() && self.keys.unexpected.is_empty()
    }

    /// The model keys missing from the checkpoint that belong to the frozen parts.
    pub fn frozen_missing(&self) -> Vec<&KeyShape> {
        self.keys
            .missing
            .iter()
            .filter(|(k, _)| is_frozen_part(k))
            .collect()
    }

    /// The model keys missing from the checkpoint outside the frozen parts.
    pub fn other_missing(&self) -> Vec<&KeyShape> {
        self.keys
            .missing
            .iter()
            .filter(|(k, _)| !is_frozen_part(k))
            .collect()
    }
}

/// What the trainer would load from a checkpoint of `source_version` with the model state
/// `source` into the model `target_version` / `target_params`: the `parts` of a v5.5
/// checkpoint, the whole state of any other.
pub fn load_plan(
    source: &[KeyShape],
    source_version: VersionId,
    target_version: VersionId,
    target_params: &LayoutParams,
    parts: LoadParts,
) -> LoadPlan {
    let target = super::expected_layout(target_version, target_params);
    if super::version(source_version).family == VersionId::V5_5 {
        partial_plan(source, &target, target_params, parts)
    } else {
        whole_plan(source, &target)
    }
}

/// Loading named parts of a v5.5 checkpoint, with the Frozen → improved Linear index map
/// (0→0, 2→4, 4→8).
fn partial_plan(
    source: &[KeyShape],
    target: &[KeyShape],
    params: &LayoutParams,
    parts: LoadParts,
) -> LoadPlan {
    let mut chosen: Vec<(&str, EncoderKind, &str)> = Vec::new();
    if parts.encoder_a {
        chosen.push(("encoder_A", params.encoder, "encoder"));
    }
    if parts.encoder_b {
        chosen.push(("encoder_B", params.encoder, "encoder"));
    }
    if parts.decoder_a {
        chosen.push(("decoder_A", params.decoder, "decoder"));
    }
    let names: Vec<&str> = chosen.iter().map(|p| p.0).collect();
    let mut plan = LoadPlan {
        mode: if names.is_empty() {
            "nothing (encoder_to_load and decoder_to_load are none)".into()
        } else {
            format!("parts of a v5.5 checkpoint: {}", names.join(", "))
        },
        ..LoadPlan::default()
    };
    let src: HashMap<&str, &Vec<u64>> = source.iter().map(|(k, s)| (k.as_str(), s)).collect();
    for (part, kind, seq) in chosen {
        let prefix = format!("{part}.");
        let mut used: HashSet<String> = HashSet::new();
        for (key, shape) in target.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            let from = if kind == EncoderKind::Improved {
                map_improved_to_frozen(key, seq)
            } else {
                Some(key.clone())
            };
            match from.as_deref().and_then(|f| src.get(f).map(|s| (f, s))) {
                Some((f, s)) if *s == shape => {
                    used.insert(f.to_string());
                    plan.keys.matched += 1;
                    if f == key {
                        plan.loaded.push(key.clone());
                    } else {
                        plan.mapped.push((f.to_string(), key.clone()));
                    }
                }
                Some((f, s)) => {
                    used.insert(f.to_string());
                    plan.keys.mismatched.push(SizeMismatch::new(
                        key.clone(),
                        shape.clone(),
                        s.to_vec(),
                    ));
                }
                // LayerNorms of improved parts have no Frozen counterpart: left at 1 / 0.
                None if from.is_none() => {}
                None => plan.keys.missing.push((key.clone(), shape.clone())),
            }
        }
        for (k, s) in source.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            if !used.contains(k) {
                plan.keys.unexpected.push((k.clone(), s.clone()));
            }
        }
    }
    plan
}

/// For an improved encoder/decoder key, the Frozen-style key it is loaded from:
/// `encoder.4.weight` ← `encoder.2.weight`; `None` for its LayerNorms (no counterpart).
fn map_improved_to_frozen(key: &str, seq: &str) -> Option<String> {
    let marker = format!(".{seq}.");
    let Some(pos) = key.find(&marker) else {
        return Some(key.to_string()); // fc_mu, fc_logvar
    };
    let rest = &key[pos + marker.len()..];
    let (idx, tail) = rest.split_once('.')?;
    let from = match idx {
        "0" => "0",
        "4" => "2",
        "8" => "4",
        _ => return None,
    };
    Some(format!("{}{marker}{from}.{tail}", &key[..pos]))
}

/// Loading the whole model state (v5.11-family checkpoints), `strict=False` semantics.
fn whole_plan(source: &[KeyShape], target: &[KeyShape]) -> LoadPlan {
    let keys = super::compare_layout(target, source);
    let src: HashSet<&str> = source.iter().map(|(k, _)| k.as_str()).collect();
    let mismatched: HashSet<&str> = keys.mismatched.iter().map(|m| m.key.as_str()).collect();
    let mut seen = HashSet::new();
    let loaded = target
        .iter()
        .map(|(k, _)| k)
        .filter(|k| src.contains(k.as_str()) && !mismatched.contains(k.as_str()))
        .filter(|k| seen.insert(k.as_str()))
        .cloned()
        .collect();
    LoadPlan {
        mode: "whole model state (v5.11-family checkpoint)".into(),
        loaded,
        mapped: Vec::new(),
        keys,
    }
}

/// Whether a model key belongs to the parts the trainer keeps frozen (their random
/// initialisation would ruin coverage).
pub fn is_frozen_part(key: &str) -> bool {
    key.starts_with("encoder_A.") || key.starts_with("decoder_A.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn improved_index_map() {
        assert_eq!(
            map_improved_to_frozen("encoder_A.encoder.4.weight", "encoder").as_deref(),
            Some("encoder_A.encoder.2.weight")
        );
        assert_eq!(
            map_improved_to_frozen("encoder_A.encoder.8.bias", "encoder").as_deref(),
            Some("encoder_A.encoder.4.bias")
        );
        assert_eq!(
            map_improved_to_frozen("encoder_A.encoder.1.weight", "encoder"),
            None
        );
        assert_eq!(
            map_improved_to_frozen("encoder_A.fc_mu.weight", "encoder").as_deref(),
            Some("encoder_A.fc_mu.weight")
        );
        assert_eq!(
            map_improved_to_frozen("decoder_A.decoder.8.weight", "decoder").as_deref(),
            Some("decoder_A.decoder.4.weight")
        );
    }

    #[test]
    fn whole_plan_lists_everything() {
        let src = vec![
            ("a".to_string(), vec![2]),
            ("b".to_string(), vec![3]),
            ("x".to_string(), vec![1]),
        ];
        let tgt = vec![
            ("a".to_string(), vec![2]),
            ("b".to_string(), vec![4]),
            ("c".to_string(), vec![1]),
        ];
        let p = whole_plan(&src, &tgt);
        assert_eq!(p.loaded.len(), 1);
        assert_eq!(p.keys.matched, 1);
        assert_eq!(
            p.keys.mismatched,
            vec![SizeMismatch::new("b", vec![4], vec![3])]
        );
        assert_eq!(p.keys.missing, vec![("c".to_string(), vec![1])]);
        assert_eq!(p.keys.unexpected, vec![("x".to_string(), vec![1])]);
        // JSON as docs/json.md has it: size_mismatch is [key, checkpoint, model].
        let j = serde_json::to_value(&p).unwrap();
        assert_eq!(j["loaded"], 1);
        assert_eq!(j["size_mismatch"], serde_json::json!([["b", [3], [4]]]));
    }
}
