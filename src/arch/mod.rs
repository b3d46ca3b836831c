//! Architecture catalog and version inference. (Being written.)
use serde::Serialize;

/// The version inferred for a checkpoint, for reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionGuess {
    pub version: String,
    pub display: String,
    pub confidence: f64,
    pub layout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

pub fn guess_checkpoint(_ckpt: &crate::format::Checkpoint) -> Option<VersionGuess> {
    None
}
