//! The one comparison of two key sets (an expected layout or model, and the keys a
//! checkpoint or a plan provides): which keys match, which are missing, unexpected, or have
//! another shape. Version inference ([`super::Candidate`]), `tvck check`'s load plan
//! ([`super::LoadPlan`]), the trainer's strict load, the migration planner and the reports
//! all use it, and PyTorch's wording of a failed `load_state_dict` is written here once.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::KeyShape;

/// A key present on both sides with different shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeMismatch {
    pub key: String,
    /// The shape the layout or model has.
    pub expected: Vec<u64>,
    /// The shape the checkpoint (or plan) provides.
    pub found: Vec<u64>,
}

impl SizeMismatch {
    pub fn new(key: impl Into<String>, expected: Vec<u64>, found: Vec<u64>) -> Self {
        SizeMismatch {
            key: key.into(),
            expected,
            found,
        }
    }

    /// PyTorch's line for it: `size mismatch for K: copying a param with shape [..] from
    /// checkpoint, the shape in current model is [..].`
    pub fn pytorch_text(&self) -> String {
        format!(
            "size mismatch for {}: copying a param with shape {} from checkpoint, the shape in current model is {}.",
            self.key,
            crate::format::shape_text(&self.found),
            crate::format::shape_text(&self.expected)
        )
    }
}

/// JSON: `[key, expected, found]`, the array the reports have always written.
impl Serialize for SizeMismatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.key, &self.expected, &self.found).serialize(s)
    }
}

impl<'de> Deserialize<'de> for SizeMismatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (key, expected, found) = <(String, Vec<u64>, Vec<u64>)>::deserialize(d)?;
        Ok(SizeMismatch {
            key,
            expected,
            found,
        })
    }
}

/// The difference between an expected key set and actual keys.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct KeyComparison {
    /// Keys present with the expected shape.
    #[serde(default)]
    pub matched: usize,
    /// Expected keys absent from the actual ones (expected shape), in expected order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<KeyShape>,
    /// Actual keys the expected set does not have, in actual order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unexpected: Vec<KeyShape>,
    /// Keys on both sides with other shapes, in expected order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatched: Vec<SizeMismatch>,
}

impl KeyComparison {
    /// True when nothing differs.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }

    /// `matched / (matched + missing + unexpected + mismatched)` (0 when both are empty).
    pub fn agreement(&self) -> f64 {
        let total =
            self.matched + self.missing.len() + self.unexpected.len() + self.mismatched.len();
        if total == 0 {
            0.0
        } else {
            self.matched as f64 / total as f64
        }
    }

    /// The lines of PyTorch's `load_state_dict` error after its first line (see
    /// [`pytorch_error_title`]): each size mismatch, then the missing and the unexpected
    /// keys (empty lists are left out).
    pub fn pytorch_error_lines(&self) -> Vec<String> {
        let quoted = |ks: &[KeyShape]| {
            ks.iter()
                .map(|(k, _)| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut lines: Vec<String> = self
            .mismatched
            .iter()
            .map(SizeMismatch::pytorch_text)
            .collect();
        if !self.missing.is_empty() {
            lines.push(format!(
                "Missing key(s) in state_dict: {}.",
                quoted(&self.missing)
            ));
        }
        if !self.unexpected.is_empty() {
            lines.push(format!(
                "Unexpected key(s) in state_dict: {}.",
                quoted(&self.unexpected)
            ));
        }
        lines
    }
}

/// The first line of PyTorch's `load_state_dict` error for a model class.
pub fn pytorch_error_title(model: &str) -> String {
    format!("Error(s) in loading state_dict for {model}:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_the_array_form_and_reads_it_back() {
        let c = KeyComparison {
            matched: 3,
            missing: vec![("a".into(), vec![2])],
            unexpected: vec![],
            mismatched: vec![SizeMismatch::new("b", vec![64, 64], vec![16, 64])],
        };
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(
            j,
            r#"{"matched":3,"missing":[["a",[2]]],"mismatched":[["b",[64,64],[16,64]]]}"#
        );
        assert_eq!(serde_json::from_str::<KeyComparison>(&j).unwrap(), c);
        assert_eq!(
            serde_json::from_str::<KeyComparison>("{}").unwrap(),
            KeyComparison::default()
        );
    }

    #[test]
    fn pytorch_wording() {
        let c = KeyComparison {
            matched: 0,
            missing: vec![("m.w".into(), vec![2]), ("m.b".into(), vec![2])],
            unexpected: vec![("x".into(), vec![])],
            mismatched: vec![SizeMismatch::new("p", vec![64, 64], vec![16, 64])],
        };
        assert_eq!(
            c.pytorch_error_lines(),
            [
                "size mismatch for p: copying a param with shape [16, 64] from checkpoint, the shape in current model is [64, 64].",
                "Missing key(s) in state_dict: \"m.w\", \"m.b\".",
                "Unexpected key(s) in state_dict: \"x\".",
            ]
        );
        assert_eq!(c.agreement(), 0.0);
        assert!(!c.is_exact());
        assert_eq!(
            pytorch_error_title("M"),
            "Error(s) in loading state_dict for M:"
        );
    }
}
