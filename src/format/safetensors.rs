//! `.safetensors` files: an 8-byte little-endian header length, a JSON header, then the
//! tensor bytes. Header parsing and validation are done by the `safetensors` crate
//! (header size capped at 100 MB, offsets checked to be contiguous and to match each
//! tensor's dtype × shape, and the data to end exactly at the end of the file); tensor
//! data is never copied here: each tensor becomes a [`StorageData::Mapped`] range.

use super::{
    limits, DType, Finding, FormatError, Limit, Parsed, Storage, StorageData, TensorInfo, Value,
};
use ::safetensors::SafeTensors;

/// Key under which the header's free-form `__metadata__` strings appear in the root dict.
pub const METADATA_KEY: &str = "__metadata__";

/// Whether the bytes look like a safetensors file (plausible header length followed by `{`).
/// A pickle never has `{` at byte 8 after a length that fits the file, so this also tells
/// safetensors apart from pickles whose first byte (0x80) a header length may share.
pub fn looks_like_safetensors(bytes: &[u8]) -> bool {
    looks_like_safetensors_head(bytes, bytes.len() as u64)
}

/// [`looks_like_safetensors`] from the first bytes (at least 9) of a `len`-byte file.
pub fn looks_like_safetensors_head(head: &[u8], len: u64) -> bool {
    if head.len() < 9 || len < 9 || head[8] != b'{' {
        return false;
    }
    // A header length that fits the file, or one so large it can only be a (bad) claim.
    let n = u64::from_le_bytes(head[..8].try_into().unwrap_or([0; 8]));
    n <= len - 8 || head[0] != super::pickle::opcodes::PROTO
}

fn header_len(bytes: &[u8]) -> Result<u64, FormatError> {
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            FormatError::Truncated("shorter than the 8-byte safetensors header length".into())
        })?;
    Ok(u64::from_le_bytes(len_bytes))
}

/// Parse a safetensors file held in memory.
pub fn read(bytes: &[u8]) -> Result<Parsed, FormatError> {
    read_input(&mut super::input::Whole(bytes))
}

/// Parse a safetensors file, reading its header only (tensor data stays where it is).
pub fn read_input(input: &mut dyn super::input::Input) -> Result<Parsed, FormatError> {
    let n = header_len(input.get(0, 8)?)?;
    let available = input.len().saturating_sub(8);
    if n > available {
        return Err(FormatError::SizeClaim {
            what: "safetensors header length".into(),
            claimed: n,
            available,
        });
    }
    if n > limits::MAX_SAFETENSORS_HEADER {
        return Err(FormatError::Limit {
            limit: Limit::SafetensorsHeader,
            max: limits::MAX_SAFETENSORS_HEADER,
            found: n,
            at: String::new(),
        });
    }
    // The header, read (at most MAX_SAFETENSORS_HEADER bytes); `read_metadata` reads
    // nothing else of the file-sized buffer (it only compares its length).
    input.get(8, 8 + n)?;
    let bytes = input.all();
    let (n, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| describe(e, bytes, n))?;
    let data_start = 8 + n as u64;

    let mut parsed = Parsed::default();
    let mut items = Vec::new();
    for name in metadata.offset_keys() {
        let Some(info) = metadata.info(&name) else {
            continue;
        };
        let dtype_name = format!("{:?}", info.dtype);
        let dtype =
            DType::from_safetensors_name(&dtype_name).ok_or_else(|| FormatError::Tensor {
                tensor: name.clone(),
                problem: Box::new(crate::format::TensorIssue::UnsupportedDtype(
                    dtype_name.clone(),
                )),
            })?;
        if info.shape.len() > limits::MAX_DIMS {
            return Err(FormatError::Limit {
                limit: Limit::Dims,
                max: limits::MAX_DIMS as u64,
                found: info.shape.len() as u64,
                at: name.clone(),
            });
        }
        let shape: Vec<u64> = info.shape.iter().map(|d| *d as u64).collect();
        let (start, end) = info.data_offsets;
        let numel: u64 = shape.iter().product();
        parsed.storages.push(Storage {
            key: name.clone(),
            dtype,
            location: "cpu".into(),
            numel,
            data: StorageData::Mapped {
                offset: data_start + start as u64,
                len: (end - start) as u64,
            },
        });
        let index = parsed.tensors.len();
        parsed.tensors.push(TensorInfo {
            path: name.clone(),
            dtype,
            strides: TensorInfo::contiguous_strides(&shape),
            shape,
            storage_offset: 0,
            storage: parsed.storages.len() - 1,
            requires_grad: false,
        });
        items.push((Value::Str(name), Value::Tensor(index)));
    }
    // A tree written by tvck (`tvck.tree`): the checkpoint's own structure, tensors by name.
    if let Some(tree) = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(crate::format::write::safetensors::TREE_KEY))
    {
        let index: std::collections::HashMap<&str, usize> = parsed
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.path.as_str(), i))
            .collect();
        match crate::format::write::safetensors::tree_from_json(tree, |n| index.get(n).copied()) {
            Ok(root) => {
                // Tensor paths follow the tree, as for a pickle; a tensor the tree does not
                // reach keeps its safetensors name.
                let paths = crate::format::torch::tensor_paths(&root, parsed.tensors.len());
                for (t, p) in parsed.tensors.iter_mut().zip(paths) {
                    if let Some(p) = p {
                        t.path = p;
                    }
                }
                parsed.root = root;
                return Ok(parsed);
            }
            Err(e) => parsed.findings.push(Finding::Note {
                message: format!(
                    "the `{}` metadata does not decode ({e}); showing the flat tensors",
                    crate::format::write::safetensors::TREE_KEY
                ),
            }),
        }
    }
    if let Some(meta) = metadata.metadata() {
        let mut entries: Vec<(&String, &String)> = meta.iter().collect();
        entries.sort();
        let dict = entries
            .into_iter()
            .map(|(k, v)| (Value::Str(k.clone()), Value::Str(v.clone())))
            .collect();
        items.push((Value::Str(METADATA_KEY.into()), Value::Dict(dict)));
    }
    parsed.root = Value::Dict(items);
    Ok(parsed)
}

fn describe(e: ::safetensors::SafeTensorError, bytes: &[u8], n: u64) -> FormatError {
    use ::safetensors::SafeTensorError as E;
    match e {
        E::MetadataIncompleteBuffer => {
            // Recompute what the header claims, for a useful message.
            let claimed = serde_json::from_slice::<serde_json::Value>(&bytes[8..8 + n as usize])
                .ok()
                .and_then(|h| {
                    h.as_object().map(|o| {
                        o.values()
                            .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
                            .max()
                            .unwrap_or(0)
                    })
                })
                .unwrap_or(0);
            FormatError::SizeClaim {
                what: "safetensors header (tensor data)".into(),
                claimed,
                available: (bytes.len() as u64).saturating_sub(8 + n),
            }
        }
        other => FormatError::Safetensors(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_tensors_and_metadata() {
        let bytes = file(
            r#"{"__metadata__":{"version":"v5.12.4"},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"I8","shape":[2,2],"data_offsets":[0,4]}}"#,
            &[1, 2, 3, 4, 0, 0, 128, 63, 0, 0, 0, 64],
        );
        let p = read(&bytes).unwrap();
        assert_eq!(p.tensors.len(), 2);
        assert_eq!(p.tensors[0].path, "a");
        assert_eq!(p.tensors[0].shape, vec![2, 2]);
        assert_eq!(p.tensors[1].dtype, DType::F32);
        assert_eq!(
            p.root
                .get_path("__metadata__.version")
                .and_then(Value::as_str),
            Some("v5.12.4")
        );
        let hdr = bytes.len() as u64 - 12;
        assert_eq!(
            p.storages[1].data,
            StorageData::Mapped {
                offset: hdr + 4,
                len: 8
            }
        );
    }

    #[test]
    fn header_length_starting_with_0x80_is_not_a_pickle() {
        // Header of 0x80 = 128 bytes: the first byte equals the pickle PROTO opcode.
        let mut header = r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#.to_string();
        while header.len() < 128 {
            header.push(' ');
        }
        let bytes = file(&header, &[7]);
        assert_eq!(bytes[0], 0x80);
        let (format, parsed) = crate::format::detect_and_parse(&bytes).unwrap();
        assert_eq!(format, crate::format::Format::Safetensors);
        assert_eq!(parsed.tensors.len(), 1);
    }

    #[test]
    fn rejects_huge_claims_without_allocating() {
        let bytes = file(
            r#"{"w":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000]}}"#,
            &[0; 16],
        );
        let err = read(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::SizeClaim {
                    claimed: 4000000000000,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn rejects_bad_header_length() {
        let mut bytes = (1u64 << 50).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        assert!(matches!(
            read(&bytes).unwrap_err(),
            FormatError::SizeClaim { .. }
        ));
        let mut bytes = vec![0u8; 200];
        bytes[..8].copy_from_slice(&(150_000_000u64).to_le_bytes());
        bytes[8] = b'{';
        assert!(matches!(
            read(&bytes).unwrap_err(),
            FormatError::SizeClaim { .. }
        ));
        let mut bytes = 50u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        assert!(matches!(
            read(&bytes).unwrap_err(),
            FormatError::SizeClaim { .. }
        ));
        assert!(read(b"{}").is_err());
    }

    #[test]
    fn rejects_inconsistent_offsets() {
        let bytes = file(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            &[0; 4],
        );
        assert!(matches!(
            read(&bytes).unwrap_err(),
            FormatError::Safetensors(_)
        ));
        let bytes = file(r#"not json"#, &[]);
        assert!(read(&bytes).is_err());
    }
}
