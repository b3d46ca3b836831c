//! SHA-256 fingerprints of tensors and of whole checkpoints.
//!
//! * A tensor's hash is the SHA-256 of its *logical* bytes: row-major contiguous,
//!   little-endian, whatever the container, strides, storage offset or byte order.
//!   The same weights in a `.pt` and a `.safetensors` file hash the same.
//! * A checkpoint's weights fingerprint is the SHA-256 over its model-state tensors
//!   sorted by name, each encoded as
//!   `name \0 dtype \0 ndim:u64le dims:u64le… tensor_hash[32]`. It does not depend on the
//!   file name, key order, the key the state sits under, or the container.
//!   Files with no model state use every tensor, by path.
//!
//! Tensors are hashed many at a time ([`many`]): on CPUs with AVX-512, 16 messages run
//! side by side, so callers with many files (scan) hand over a batch of checkpoints.

pub mod many;

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use crate::format::{Checkpoint, FormatError, ModelStateRef};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Hex form of a hash.
pub fn hex(hash: &Hash) -> String {
    hex::encode(hash)
}

/// Short hex form (first 12 hex digits) for tables.
pub fn short(hash: &Hash) -> String {
    hex::encode(&hash[..6])
}

/// SHA-256 of one tensor's logical bytes.
pub fn tensor_hash(ckpt: &Checkpoint, index: usize) -> Result<Hash, FormatError> {
    let bytes = ckpt.tensor_bytes(index)?;
    Ok(Sha256::digest(&bytes).into())
}

/// SHA-256 of the logical bytes of each tensor in `indices`, hashed together.
pub fn tensor_hashes(ckpt: &Checkpoint, indices: &[usize]) -> Vec<Result<Hash, FormatError>> {
    let items: Vec<(&Checkpoint, usize)> = indices.iter().map(|&i| (ckpt, i)).collect();
    hash_tensors(&items)
}

/// Bytes a tensor's read costs beyond what is in memory already.
fn read_cost(ckpt: &Checkpoint, index: usize) -> u64 {
    let t = &ckpt.tensors[index];
    let borrowed = ckpt.storage_in_memory(t.storage)
        && t.is_contiguous()
        && (!ckpt.big_endian || t.dtype.swap_unit() <= 1);
    if borrowed {
        0
    } else {
        t.nbytes()
    }
}

/// SHA-256 of each (checkpoint, tensor) in `items`, many at a time, in groups whose
/// bytes read from files, inflated or gathered for the occasion stay within
/// [`limits::MAX_HASH_BATCH_BYTES`] (a larger tensor makes a group alone): memory stays
/// bounded whatever the files hold.
///
/// [`limits::MAX_HASH_BATCH_BYTES`]: crate::format::limits::MAX_HASH_BATCH_BYTES
pub fn hash_tensors(items: &[(&Checkpoint, usize)]) -> Vec<Result<Hash, FormatError>> {
    let max = crate::format::limits::MAX_HASH_BATCH_BYTES;
    let mut out = Vec::with_capacity(items.len());
    let mut start = 0;
    while start < items.len() {
        let mut group: Vec<Result<Cow<'_, [u8]>, FormatError>> = Vec::new();
        let mut cost = 0u64;
        for &(ckpt, index) in &items[start..] {
            let c = read_cost(ckpt, index);
            if !group.is_empty() && cost.saturating_add(c) > max {
                break;
            }
            cost = cost.saturating_add(c);
            group.push(ckpt.tensor_bytes(index));
        }
        start += group.len();
        let msgs: Vec<&[u8]> = group.iter().flatten().map(|b| &b[..]).collect();
        let mut hashes = many::sha256_many(&msgs).into_iter();
        drop(msgs);
        out.extend(
            group
                .into_iter()
                .map(|b| b.map(|_| hashes.next().expect("one hash per readable tensor"))),
        );
    }
    out
}

/// One named tensor of a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDigest {
    pub name: String,
    pub index: usize,
    pub hash: Hash,
}

/// The hashes of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// Weights fingerprint of the whole checkpoint.
    pub weights: Hash,
    /// Every hashed tensor, sorted by name.
    pub tensors: Vec<TensorDigest>,
}

/// Hash every tensor of the model state and combine them into the weights fingerprint.
pub fn fingerprint(ckpt: &Checkpoint) -> Result<Fingerprint, FormatError> {
    fingerprint_with(ckpt, ckpt.model_state_ref().as_ref())
}

/// The storages whose bytes a fingerprint reads (for [`Checkpoint::load_storages`]).
pub fn fingerprint_storages(
    ckpt: &Checkpoint,
    model_state: Option<&ModelStateRef<'_>>,
) -> Vec<usize> {
    let mut s: Vec<usize> = ckpt
        .weight_tensors(model_state)
        .into_iter()
        .map(|(_, i)| ckpt.tensors[i].storage)
        .collect();
    s.sort_unstable();
    s.dedup();
    s
}

/// [`fingerprint`] for an already computed model state.
pub fn fingerprint_with(
    ckpt: &Checkpoint,
    model_state: Option<&ModelStateRef<'_>>,
) -> Result<Fingerprint, FormatError> {
    fingerprint_batch(&[(ckpt, model_state)])
        .pop()
        .expect("one result per checkpoint")
}

/// Fingerprints of several checkpoints (each with its model state, if any), their tensors
/// hashed together: the multi-buffer engine is fastest with many messages at once, and
/// one file alone may hold only a few large tensors. A checkpoint whose tensor bytes
/// cannot be read gets its error; the others are unaffected.
pub fn fingerprint_batch(
    items: &[(&Checkpoint, Option<&ModelStateRef<'_>>)],
) -> Vec<Result<Fingerprint, FormatError>> {
    // Every item's tensors, hashed together (in bounded groups).
    let wanted: Vec<Vec<(&str, usize)>> = items
        .iter()
        .map(|&(ckpt, ms)| ckpt.weight_tensors(ms))
        .collect();
    let flat: Vec<(&Checkpoint, usize)> = items
        .iter()
        .zip(&wanted)
        .flat_map(|(&(ckpt, _), ts)| ts.iter().map(move |&(_, i)| (ckpt, i)))
        .collect();
    let mut hashes = hash_tensors(&flat).into_iter();
    items
        .iter()
        .zip(wanted)
        .map(|(&(ckpt, _), ts)| {
            // Every tensor's result is taken, so that the next item starts at its own.
            let results: Vec<_> = ts
                .into_iter()
                .map(|(name, index)| {
                    let hash = hashes.next().expect("one result per tensor")?;
                    let name = name.to_string();
                    Ok(TensorDigest { name, index, hash })
                })
                .collect();
            let tensors = results
                .into_iter()
                .collect::<Result<Vec<_>, FormatError>>()?;
            Ok(assemble(ckpt, tensors))
        })
        .collect()
}

/// [`fingerprint`] reusing tensor hashes already computed (`known[i]` for tensor `i`, e.g.
/// by `inspect`, which hashes every tensor anyway); missing ones are computed.
pub fn fingerprint_reusing(
    ckpt: &Checkpoint,
    known: &[Option<Hash>],
) -> Result<Fingerprint, FormatError> {
    let model_state = ckpt.model_state_ref();
    let wanted = ckpt.weight_tensors(model_state.as_ref());
    let missing: Vec<usize> = wanted
        .iter()
        .map(|&(_, i)| i)
        .filter(|&i| known.get(i).copied().flatten().is_none())
        .collect();
    let mut computed = tensor_hashes(ckpt, &missing).into_iter();
    let tensors = wanted
        .into_iter()
        .map(|(name, index)| {
            let hash = match known.get(index).copied().flatten() {
                Some(h) => h,
                None => computed.next().expect("one result per missing tensor")?,
            };
            let name = name.to_string();
            Ok(TensorDigest { hash, name, index })
        })
        .collect::<Result<Vec<_>, FormatError>>()?;
    Ok(assemble(ckpt, tensors))
}

/// Sort by name and combine into the weights fingerprint.
fn assemble(ckpt: &Checkpoint, mut tensors: Vec<TensorDigest>) -> Fingerprint {
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let weights = combine(ckpt, &tensors);
    Fingerprint { weights, tensors }
}

fn combine(ckpt: &Checkpoint, tensors: &[TensorDigest]) -> Hash {
    let mut h = Sha256::new();
    for t in tensors {
        let info = &ckpt.tensors[t.index];
        h.update(t.name.as_bytes());
        h.update([0]);
        h.update(info.dtype.torch_name().as_bytes());
        h.update([0]);
        h.update((info.shape.len() as u64).to_le_bytes());
        for d in &info.shape {
            h.update(d.to_le_bytes());
        }
        h.update(t.hash);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_forms() {
        let h: Hash = Sha256::digest(b"abc").into();
        assert_eq!(
            hex(&h),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(short(&h), "ba7816bf8f01");
    }

    fn st(header: &str, data: &[u8]) -> Checkpoint {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        Checkpoint::from_bytes("mem.safetensors", out).unwrap()
    }

    #[test]
    fn independent_of_key_order_and_layout() {
        let a = st(
            r#"{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"y":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}"#,
            &[1, 2, 3],
        );
        let b = st(
            r#"{"y":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"x":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#,
            &[3, 1, 2],
        );
        let fa = fingerprint(&a).unwrap();
        let fb = fingerprint(&b).unwrap();
        assert_eq!(fa.weights, fb.weights);
        assert_eq!(fa.tensors[0].name, "x");
        assert_eq!(fa.tensors[0].hash, <Hash>::from(Sha256::digest([1u8, 2])));
        // A different shape over the same bytes changes the fingerprint.
        let c = st(
            r#"{"x":{"dtype":"U8","shape":[2,1],"data_offsets":[0,2]},"y":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}"#,
            &[1, 2, 3],
        );
        assert_ne!(fingerprint(&c).unwrap().weights, fa.weights);
    }

    #[test]
    fn reusing_known_hashes_gives_the_same_fingerprint() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/v5_11/best.pt");
        let c = Checkpoint::open(path).unwrap();
        let all: Vec<Option<Hash>> = (0..c.tensors.len())
            .map(|i| Some(tensor_hash(&c, i).unwrap()))
            .collect();
        let fresh = fingerprint(&c).unwrap();
        assert_eq!(fingerprint_reusing(&c, &all).unwrap(), fresh);
        assert_eq!(fingerprint_reusing(&c, &[]).unwrap(), fresh);
    }
}
