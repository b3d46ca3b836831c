//! Writing `.safetensors` files, byte for byte as the reference implementation
//! (`safetensors.torch.save_file`, the `safetensors` crate's `serialize`) does:
//!
//! * 8-byte little-endian header length, then the JSON header, padded with spaces to
//!   a multiple of 8 (so the data starts 8-byte aligned), then the tensor bytes — with
//!   one exception: a length whose first byte would be `0x80` (or that would start
//!   with `PK\x03\x04`) gets 8 more spaces, so content sniffing (tvck's reader
//!   included) never takes the file for a pickle or a zip;
//! * compact JSON: `__metadata__` first (omitted when there is none; its keys sorted),
//!   then one entry per tensor, in data order;
//! * data contiguous, no holes, ordered by dtype, largest first (the reference's
//!   order: F64/I64/U64 … BOOL), then by name — so every tensor starts at a multiple
//!   of its element size; within one dtype, tensors are in name order.
//!
//! complex128 has no safetensors dtype and is refused. A checkpoint's non-tensor values
//! can ride along as JSON in the metadata: [`tree_json`] under [`TREE_KEY`]
//! (`"tvck.tree"`), decoded again by [`tree_from_json`].

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use serde_json::{json, Map, Value as Json};

use super::{join_path, TensorData, TensorProblem, WriteError, WriteLimit};
use crate::format::{limits, DType, Value};

/// Metadata key under which [`tree_json`] output is conventionally stored.
pub const TREE_KEY: &str = "tvck.tree";

/// Deepest value nesting [`tree_json`] writes: each level is two JSON levels, and
/// common JSON parsers (serde_json) stop at 128.
pub const MAX_TREE_DEPTH: usize = 60;

/// Position of a dtype in the reference implementation's `Dtype` enum (its sort key);
/// `None` for dtypes safetensors cannot hold.
fn reference_rank(d: DType) -> Option<u8> {
    Some(match d {
        DType::Bool => 0,
        DType::U8 => 4,
        DType::I8 => 5,
        DType::F8E5M2 => 6,
        DType::F8E4M3 => 7,
        DType::F8E8M0 => 8,
        DType::I16 => 9,
        DType::U16 => 10,
        DType::F16 => 11,
        DType::BF16 => 12,
        DType::I32 => 13,
        DType::U32 => 14,
        DType::F32 => 15,
        DType::C64 => 16,
        DType::F64 => 17,
        DType::I64 => 18,
        DType::U64 => 19,
        _ => return None,
    })
}

/// Whether a safetensors file can hold tensors of `dtype` (the reference implementation
/// has a tag for it).
pub fn can_hold(dtype: DType) -> bool {
    reference_rank(dtype).is_some()
}

/// The padded JSON header and the data order (indices into `tensors`).
pub fn header(
    tensors: &[(String, TensorData<'_>)],
    metadata: &BTreeMap<String, String>,
) -> Result<(Vec<u8>, Vec<usize>), WriteError> {
    let mut seen = HashSet::new();
    for (name, t) in tensors {
        let bad = |problem: TensorProblem| WriteError::Tensor {
            tensor: name.clone(),
            problem,
        };
        if name == "__metadata__" {
            return Err(bad(TensorProblem::ReservedName));
        }
        if !seen.insert(name.as_str()) {
            return Err(bad(TensorProblem::DuplicateName));
        }
        if !can_hold(t.dtype) {
            return Err(bad(TensorProblem::NoSafetensorsDtype(t.dtype)));
        }
        let layout = TensorData {
            requires_grad: false,
            ..t.borrowed()
        };
        layout.validate().map_err(bad)?;
    }
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let (na, ta) = &tensors[a];
        let (nb, tb) = &tensors[b];
        reference_rank(tb.dtype)
            .cmp(&reference_rank(ta.dtype))
            .then(na.cmp(nb))
    });
    let mut h = String::from("{");
    let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
    if !metadata.is_empty() {
        h.push_str("\"__metadata__\":{");
        for (i, (k, v)) in metadata.iter().enumerate() {
            if i > 0 {
                h.push(',');
            }
            h.push_str(&q(k));
            h.push(':');
            h.push_str(&q(v));
        }
        h.push('}');
    }
    let mut offset = 0u64;
    for (n, &i) in order.iter().enumerate() {
        let (name, t) = &tensors[i];
        if n > 0 || !metadata.is_empty() {
            h.push(',');
        }
        let end = offset + t.bytes.len() as u64;
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        h.push_str(&format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            q(name),
            t.dtype.safetensors_name().unwrap_or_default(),
            shape.join(",")
        ));
        offset = end;
    }
    h.push('}');
    let mut bytes = h.into_bytes();
    let mut padded = bytes.len().next_multiple_of(8);
    while mistaken_for_other_format(padded as u64) {
        padded += 8;
    }
    bytes.resize(padded, b' ');
    if bytes.len() as u64 > limits::MAX_SAFETENSORS_HEADER {
        return Err(WriteError::Limit {
            limit: WriteLimit::SafetensorsHeader,
            max: limits::MAX_SAFETENSORS_HEADER,
            found: bytes.len() as u64,
            at: String::new(),
        });
    }
    Ok((bytes, order))
}

/// Whether a file starting with this header length would be taken for another format
/// by content sniffing (tvck's reader checks for a pickle's `0x80` and a zip's `PK\x03\x04`
/// / `PK\x05\x06` first). Such lengths get 8 more spaces of padding, which every
/// safetensors reader accepts.
fn mistaken_for_other_format(header_len: u64) -> bool {
    let b = header_len.to_le_bytes();
    b[0] == crate::format::pickle::opcodes::PROTO
        || b[..4] == *b"PK\x03\x04"
        || b[..4] == *b"PK\x05\x06"
}

/// Write named tensors and string metadata as a `.safetensors` file to `out`.
/// Returns the number of bytes written.
pub fn write_safetensors<W: Write>(
    tensors: &[(String, TensorData<'_>)],
    metadata: &BTreeMap<String, String>,
    mut out: W,
) -> Result<u64, WriteError> {
    let (header, order) = header(tensors, metadata)?;
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(&header)?;
    let mut total = 8 + header.len() as u64;
    for i in order {
        let bytes = &tensors[i].1.bytes;
        out.write_all(bytes)?;
        total += bytes.len() as u64;
    }
    out.flush()?;
    Ok(total)
}

/// The value tree as JSON, tensors replaced by their names (`names[i]` for
/// `Value::Tensor(i)`). Each value is `{"type": …, "value": …}` as [`Value`] serializes,
/// except: floats are strings that parse back bit-exactly (`"0.1"`, `"-0.0"`, `"inf"`,
/// `"nan"`, `"nan:0x7ff8000000000001"` for other NaN payloads), bytes are hex, and a
/// tensor's value is its name. Any value (objects, globals…) can be stored: this is
/// data, nothing reads it as code.
pub fn tree_json(root: &Value, names: &[String]) -> Result<String, WriteError> {
    let mut path = Vec::new();
    let j = encode(root, names, &mut path, 0)?;
    Ok(j.to_string())
}

fn float_text(f: f64) -> String {
    if f.is_nan() {
        if f.to_bits() == f64::NAN.to_bits() {
            "nan".into()
        } else {
            format!("nan:{:#018x}", f.to_bits())
        }
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{f:?}")
    }
}

fn parse_float(s: &str) -> Option<f64> {
    if let Some(bits) = s.strip_prefix("nan:0x") {
        return u64::from_str_radix(bits, 16).ok().map(f64::from_bits);
    }
    match s {
        "nan" => Some(f64::NAN),
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok().filter(|f: &f64| f.is_finite()),
    }
}

fn tagged(ty: &str, value: Json) -> Json {
    let mut m = Map::new();
    m.insert("type".into(), Json::String(ty.into()));
    m.insert("value".into(), value);
    Json::Object(m)
}

fn encode(
    v: &Value,
    names: &[String],
    path: &mut Vec<String>,
    depth: usize,
) -> Result<Json, WriteError> {
    if depth > MAX_TREE_DEPTH {
        return Err(WriteError::Limit {
            limit: WriteLimit::JsonDepth,
            max: MAX_TREE_DEPTH as u64,
            found: depth as u64,
            at: join_path(path),
        });
    }
    let seq = |items: &[Value], path: &mut Vec<String>| -> Result<Json, WriteError> {
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            path.push(i.to_string());
            out.push(encode(item, names, path, depth + 1)?);
            path.pop();
        }
        Ok(Json::Array(out))
    };
    Ok(match v {
        Value::None => json!({"type": "none"}),
        Value::Bool(b) => tagged("bool", Json::Bool(*b)),
        Value::Int(i) => tagged("int", json!(i)),
        Value::BigInt(s) => tagged("big_int", Json::String(s.clone())),
        Value::Float(f) => tagged("float", Json::String(float_text(*f))),
        Value::Str(s) => tagged("str", Json::String(s.clone())),
        Value::Bytes(b) => tagged("bytes", Json::String(hex::encode(b))),
        Value::List(items) => tagged("list", seq(items, path)?),
        Value::Tuple(items) => tagged("tuple", seq(items, path)?),
        Value::Dict(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (k, val) in items {
                path.push(match k {
                    Value::Str(s) => s.clone(),
                    other => format!("<{}>", other.kind()),
                });
                let pair = vec![
                    encode(k, names, path, depth + 1)?,
                    encode(val, names, path, depth + 1)?,
                ];
                path.pop();
                out.push(Json::Array(pair));
            }
            tagged("dict", Json::Array(out))
        }
        Value::Tensor(i) => match names.get(*i) {
            Some(name) => tagged("tensor", Json::String(name.clone())),
            None => {
                return Err(WriteError::Value {
                    path: join_path(path),
                    message: format!(
                        "refers to tensor #{i} but only {} names were given",
                        names.len()
                    ),
                })
            }
        },
        Value::NumpyScalar { dtype, value } => tagged(
            "numpy_scalar",
            json!({"dtype": dtype, "value": encode(value, names, path, depth + 1)?}),
        ),
        Value::Object { class, args, state } => {
            let args = seq(args, path)?;
            let state = match state {
                Some(s) => encode(s, names, path, depth + 1)?,
                None => Json::Null,
            };
            tagged(
                "object",
                json!({"class": class, "args": args, "state": state}),
            )
        }
        Value::Global(name) => tagged("global", Json::String(name.clone())),
        Value::Blocked { global } => tagged("blocked", json!({ "global": global })),
    })
}

/// Why the `tvck.tree` metadata of a safetensors file does not decode.
#[derive(Debug, thiserror::Error)]
pub enum TreeJsonError {
    #[error("tree JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("tree JSON nests too deeply")]
    TooDeep,
    #[error("tree JSON: no \"type\" in {0}")]
    NoType(String),
    #[error("tree JSON: bad {ty} value {value}")]
    BadValue { ty: String, value: String },
    #[error("tree JSON: no tensor `{0}`")]
    NoTensor(String),
    #[error("tree JSON: unknown type `{0}`")]
    UnknownType(String),
}

/// Decode [`tree_json`] output; `resolve` maps a tensor name to its tensor index.
pub fn tree_from_json(
    json: &str,
    resolve: impl Fn(&str) -> Option<usize>,
) -> Result<Value, TreeJsonError> {
    let j: Json = serde_json::from_str(json)?;
    decode(&j, &resolve, 0)
}

fn decode(
    j: &Json,
    resolve: &dyn Fn(&str) -> Option<usize>,
    depth: usize,
) -> Result<Value, TreeJsonError> {
    if depth > MAX_TREE_DEPTH {
        return Err(TreeJsonError::TooDeep);
    }
    let ty = j
        .get("type")
        .and_then(Json::as_str)
        .ok_or_else(|| TreeJsonError::NoType(short(j)))?;
    let v = j.get("value").unwrap_or(&Json::Null);
    let bad = || TreeJsonError::BadValue {
        ty: ty.to_string(),
        value: short(v),
    };
    let text = || v.as_str().ok_or_else(bad);
    let items = |v: &Json| -> Result<Vec<Value>, TreeJsonError> {
        v.as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|x| decode(x, resolve, depth + 1))
            .collect()
    };
    Ok(match ty {
        "none" => Value::None,
        "bool" => Value::Bool(v.as_bool().ok_or_else(bad)?),
        "int" => Value::Int(v.as_i64().ok_or_else(bad)?),
        "big_int" => Value::BigInt(text()?.to_string()),
        "float" => Value::Float(parse_float(text()?).ok_or_else(bad)?),
        "str" => Value::Str(text()?.to_string()),
        "bytes" => Value::Bytes(hex::decode(text()?).map_err(|_| bad())?),
        "list" => Value::List(items(v)?),
        "tuple" => Value::Tuple(items(v)?),
        "dict" => {
            let mut out = Vec::new();
            for pair in v.as_array().ok_or_else(bad)? {
                match pair.as_array().map(Vec::as_slice) {
                    Some([k, val]) => out.push((
                        decode(k, resolve, depth + 1)?,
                        decode(val, resolve, depth + 1)?,
                    )),
                    _ => return Err(bad()),
                }
            }
            Value::Dict(out)
        }
        "tensor" => {
            let name = text()?;
            Value::Tensor(resolve(name).ok_or_else(|| TreeJsonError::NoTensor(name.to_string()))?)
        }
        "numpy_scalar" => Value::NumpyScalar {
            dtype: v
                .get("dtype")
                .and_then(Json::as_str)
                .ok_or_else(bad)?
                .to_string(),
            value: Box::new(decode(v.get("value").ok_or_else(bad)?, resolve, depth + 1)?),
        },
        "object" => Value::Object {
            class: v
                .get("class")
                .and_then(Json::as_str)
                .ok_or_else(bad)?
                .to_string(),
            args: items(v.get("args").ok_or_else(bad)?)?,
            state: match v.get("state") {
                None | Some(Json::Null) => None,
                Some(s) => Some(Box::new(decode(s, resolve, depth + 1)?)),
            },
        },
        "global" => Value::Global(text()?.to_string()),
        "blocked" => Value::Blocked {
            global: v
                .get("global")
                .and_then(Json::as_str)
                .ok_or_else(bad)?
                .to_string(),
        },
        other => return Err(TreeJsonError::UnknownType(other.to_string())),
    })
}

fn short(j: &Json) -> String {
    let s = j.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Checkpoint, Format};

    fn t(dtype: DType, shape: &[u64], fill: u8) -> TensorData<'static> {
        let n = shape.iter().product::<u64>() as usize * dtype.size();
        TensorData::new(dtype, shape.to_vec(), vec![fill; n])
    }

    fn write(tensors: &[(String, TensorData<'_>)], meta: &BTreeMap<String, String>) -> Vec<u8> {
        let mut out = Vec::new();
        let n = write_safetensors(tensors, meta, &mut out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, out.len() as u64);
        out
    }

    #[test]
    fn header_like_the_reference() {
        // safetensors.torch.save_file({"z": zeros(3, bool), "a": ones(2), "m": zeros(1, f64)},
        //                             metadata={"a": "2", "b": "1"})
        let reference = br#"{"__metadata__":{"a":"2","b":"1"},"m":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"z":{"dtype":"BOOL","shape":[3],"data_offsets":[16,19]}}   "#;
        let tensors = vec![
            ("z".to_string(), t(DType::Bool, &[3], 0)),
            ("a".to_string(), t(DType::F32, &[2], 1)),
            ("m".to_string(), t(DType::F64, &[1], 0)),
        ];
        let meta: BTreeMap<String, String> = [("b", "1"), ("a", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (h, order) = header(&tensors, &meta).unwrap();
        assert_eq!(h, reference);
        assert_eq!(order, [2, 1, 0]);
        let bytes = write(&tensors, &meta);
        assert_eq!(&bytes[..8], &200u64.to_le_bytes());
        assert_eq!(bytes.len(), 8 + 200 + 19);
        let c = Checkpoint::from_bytes("x.safetensors", bytes).unwrap();
        assert_eq!(c.format, Format::Safetensors);
        assert_eq!(
            c.root.get_path("__metadata__.b"),
            Some(&Value::Str("1".into()))
        );
        let a = c.tensors.iter().position(|x| x.path == "a").unwrap();
        assert_eq!(&*c.tensor_bytes(a).unwrap(), &[1u8; 8]);
        // without metadata there is no __metadata__ entry
        let (h, _) = header(&tensors[..1], &BTreeMap::new()).unwrap();
        assert!(h.starts_with(br#"{"z":"#));
        assert_eq!(h.len() % 8, 0);
    }

    #[test]
    fn every_tensor_is_aligned_to_its_element_size() {
        let dtypes: Vec<DType> = DType::ALL.into_iter().filter(|d| can_hold(*d)).collect();
        let tensors: Vec<(String, TensorData<'_>)> = dtypes
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("t{i}"), t(*d, &[3], i as u8)))
            .collect();
        let bytes = write(&tensors, &BTreeMap::new());
        let c = Checkpoint::from_bytes("x.safetensors", bytes).unwrap();
        for (i, s) in c.storages.iter().enumerate() {
            let crate::format::StorageData::Mapped { offset, .. } = s.data else {
                panic!("not mapped")
            };
            assert_eq!(offset % s.dtype.size() as u64, 0, "{}", s.key);
            let idx = c.tensors.iter().position(|x| x.storage == i).unwrap();
            let name: usize = c.tensors[idx].path[1..].parse().unwrap();
            assert_eq!(c.tensors[idx].dtype, dtypes[name]);
            assert_eq!(&*c.tensor_bytes(idx).unwrap(), &*tensors[name].1.bytes);
        }
    }

    #[test]
    fn refusals() {
        let one = |name: &str, td: TensorData<'static>| vec![(name.to_string(), td)];
        let cases = [
            (one("x", t(DType::C128, &[1], 0)), "no complex128"),
            (one("__metadata__", t(DType::U8, &[1], 0)), "reserved"),
            (
                one("x", TensorData::new(DType::F32, vec![2], vec![0u8; 3])),
                "needs 8 bytes",
            ),
        ];
        for (tensors, want) in cases {
            let e = write_safetensors(&tensors, &BTreeMap::new(), Vec::new()).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
        let dup = vec![
            ("x".to_string(), t(DType::U8, &[1], 0)),
            ("x".to_string(), t(DType::U8, &[1], 0)),
        ];
        assert!(write_safetensors(&dup, &BTreeMap::new(), Vec::new())
            .unwrap_err()
            .to_string()
            .contains("twice"));
        // requires_grad does not matter here
        let mut g = t(DType::I8, &[1], 0);
        g.requires_grad = true;
        assert!(write_safetensors(&one("g", g), &BTreeMap::new(), Vec::new()).is_ok());
    }

    #[test]
    fn header_length_never_looks_like_a_pickle() {
        assert!(mistaken_for_other_format(128));
        assert!(mistaken_for_other_format(0x0380));
        assert!(mistaken_for_other_format(0x0403_4b50));
        assert!(!mistaken_for_other_format(136));
        // Find names that make the natural header exactly 128 bytes long.
        let base = r#"{"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#.len();
        let name = "n".repeat(128 - base);
        let tensors = vec![(name.clone(), t(DType::U8, &[0], 0))];
        let (h, _) = header(&tensors, &BTreeMap::new()).unwrap();
        assert_eq!(h.len(), 136);
        assert_eq!(h[127], b'}');
        assert_eq!(h[128..], *b"        ");
        let bytes = write(&tensors, &BTreeMap::new());
        assert_eq!(bytes[0], 136);
        let c = Checkpoint::from_bytes("x.safetensors", bytes).unwrap();
        assert_eq!(c.format, Format::Safetensors);
        assert_eq!(c.tensors[0].path, name);
    }

    #[test]
    fn empty_and_odd_names() {
        let tensors = vec![
            ("".to_string(), t(DType::U8, &[0], 0)),
            ("naïve \"q\"\n".to_string(), t(DType::F16, &[0, 2], 0)),
            ("s".to_string(), t(DType::I64, &[], 9)),
        ];
        let bytes = write(&tensors, &BTreeMap::new());
        let c = Checkpoint::from_bytes("x.safetensors", bytes).unwrap();
        let mut names: Vec<&str> = c.tensors.iter().map(|x| x.path.as_str()).collect();
        names.sort();
        assert_eq!(names, ["", "naïve \"q\"\n", "s"]);
        let s = c.tensors.iter().position(|x| x.path == "s").unwrap();
        assert_eq!(c.tensors[s].shape, Vec::<u64>::new());
        assert_eq!(&*c.tensor_bytes(s).unwrap(), &[9u8; 8]);
        // an empty file (no tensors, no metadata) is valid too
        let bytes = write(&[], &BTreeMap::new());
        assert_eq!(bytes, b"\x08\0\0\0\0\0\0\0{}      ");
        let c = Checkpoint::from_bytes("x.safetensors", bytes).unwrap();
        assert!(c.tensors.is_empty());
    }

    #[test]
    fn tree_json_round_trips() {
        let names = vec!["w".to_string(), "b".to_string()];
        let root = Value::Dict(vec![
            (Value::Str("w".into()), Value::Tensor(0)),
            (
                Value::Int(3),
                Value::List(vec![
                    Value::Float(0.1),
                    Value::Float(-0.0),
                    Value::Float(1e300),
                    Value::Float(f64::INFINITY),
                    Value::Float(f64::NEG_INFINITY),
                    Value::Float(f64::NAN),
                    Value::Float(f64::from_bits(0xfff0_0000_0000_0001)),
                    Value::Float(5e-324),
                ]),
            ),
            (
                Value::Tuple(vec![Value::None, Value::Bool(true)]),
                Value::Bytes(vec![0, 255]),
            ),
            (
                Value::Str("big".into()),
                Value::BigInt("-123456789012345678901234".into()),
            ),
            (
                Value::Str("np".into()),
                Value::NumpyScalar {
                    dtype: "f4".into(),
                    value: Box::new(Value::Float(0.5)),
                },
            ),
            (
                Value::Str("ns".into()),
                Value::Object {
                    class: "argparse.Namespace".into(),
                    args: vec![Value::Tensor(1)],
                    state: Some(Box::new(Value::Dict(vec![]))),
                },
            ),
            (
                Value::Str("g".into()),
                Value::Global("torch.float32".into()),
            ),
            (
                Value::Str("x".into()),
                Value::Blocked {
                    global: "os.system".into(),
                },
            ),
            (Value::Str("ü".into()), Value::Str("\u{1F600}\0".into())),
        ]);
        let j = tree_json(&root, &names).unwrap();
        let back = tree_from_json(&j, |n| names.iter().position(|x| x == n)).unwrap();
        // compare through the JSON (NaN != NaN for Value's PartialEq)
        assert_eq!(tree_json(&back, &names).unwrap(), j);
        let Value::Dict(items) = &back else { panic!() };
        let Value::List(fs) = &items[1].1 else {
            panic!()
        };
        assert_eq!(
            fs.iter()
                .map(|f| match f {
                    Value::Float(f) => f.to_bits(),
                    _ => 0,
                })
                .collect::<Vec<_>>(),
            [
                0.1f64.to_bits(),
                (-0.0f64).to_bits(),
                1e300f64.to_bits(),
                f64::INFINITY.to_bits(),
                f64::NEG_INFINITY.to_bits(),
                f64::NAN.to_bits(),
                0xfff0_0000_0000_0001,
                5e-324f64.to_bits()
            ]
        );
        assert!(j.contains(r#"{"type":"tensor","value":"w"}"#), "{j}");
        // errors
        assert!(tree_json(&Value::Tensor(2), &names).is_err());
        let mut deep = Value::None;
        for _ in 0..MAX_TREE_DEPTH {
            deep = Value::List(vec![deep]);
        }
        assert!(tree_from_json(&tree_json(&deep, &[]).unwrap(), |_| None).is_ok());
        let deeper = Value::List(vec![deep]);
        assert!(matches!(
            tree_json(&deeper, &[]),
            Err(WriteError::Limit { .. })
        ));
        assert!(tree_from_json("{", |_| None).is_err());
        assert!(
            tree_from_json(r#"{"type":"tensor","value":"zz"}"#, |_| None)
                .unwrap_err()
                .to_string()
                .contains("zz")
        );
        assert!(tree_from_json(r#"{"type":"float","value":"x"}"#, |_| None).is_err());
        assert!(tree_from_json(r#"{"type":"what"}"#, |_| None).is_err());
        assert!(tree_from_json(r#"[1]"#, |_| None).is_err());
    }
}
