//! torch zip and legacy checkpoint layouts. (Being written.)

use super::{FormatError, Parsed};

pub fn read_zip(_bytes: &[u8]) -> Result<Parsed, FormatError> {
    Err(FormatError::NotACheckpoint(
        "torch zip reader not built yet".into(),
    ))
}

pub fn read_legacy(_bytes: &[u8]) -> Result<Parsed, FormatError> {
    Err(FormatError::NotACheckpoint(
        "legacy reader not built yet".into(),
    ))
}

/// Whether a pickle stream starts with the legacy torch magic number.
pub fn is_legacy_torch(_bytes: &[u8]) -> bool {
    false
}
