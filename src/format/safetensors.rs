//! `.safetensors` (placeholder).
use super::{FormatError, Parsed};
pub fn looks_like_safetensors(_bytes: &[u8]) -> bool { false }
pub fn read(_bytes: &[u8]) -> Result<Parsed, FormatError> { Err(FormatError::Safetensors("todo".into())) }
