//! Cross-check of the reader against real PyTorch 2.13: `tests/python/make_cases.py`
//! writes checkpoints covering every dtype, strided views, shared storages, the legacy
//! format, protocol 4, numpy scalars and safetensors, with a manifest of what PyTorch
//! says they hold. tvck must read the same tensors, bytes and values.
//!
//! Needs the project's Python environment: run `scripts/test`, which creates it and runs
//! these tests (they are `#[ignore]`d in a plain `cargo test`).

use crate::common;

use common::python_cases;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value as Json;
use tvck::fingerprint;
use tvck::format::{Checkpoint, Format, Value};

/// Generate the cases once per test process (into Cargo's per-target temp dir).
fn make_cases() -> &'static (PathBuf, BTreeMap<String, Json>) {
    static CASES: OnceLock<(PathBuf, BTreeMap<String, Json>)> = OnceLock::new();
    CASES.get_or_init(|| {
        let (dir, manifest) = python_cases("make_cases.py", "pytorch-cases", "");
        let manifest: BTreeMap<String, Json> = serde_json::from_value(manifest).unwrap();
        (dir, manifest)
    })
}

/// Dotted-path lookup through dicts (string or int keys) and lists.
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| match v {
        Value::Dict(items) => items.iter().find_map(|(key, val)| {
            let hit = match key {
                Value::Str(s) => s == k,
                Value::Int(i) => i.to_string() == k,
                _ => false,
            };
            hit.then_some(val)
        }),
        Value::List(items) | Value::Tuple(items) => items.get(k.parse::<usize>().ok()?),
        Value::NumpyScalar { .. } => None,
        _ => None,
    })
}

/// Tensor `i` of `ckpt` has the dtype, shape and SHA-256 PyTorch gave (`expected`, a
/// manifest entry); `what` names it in a failure.
fn assert_tensor(ckpt: &Checkpoint, i: usize, expected: &Json, what: &str) {
    let info = &ckpt.tensors[i];
    assert_eq!(info.dtype.torch_name(), expected["dtype"], "{what} dtype");
    let shape: Vec<u64> = expected["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .collect();
    assert_eq!(info.shape, shape, "{what} shape");
    let hash = fingerprint::tensor_hash(ckpt, i).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        fingerprint::hex(&hash),
        expected["sha256"],
        "{what} bytes differ from PyTorch's"
    );
}

#[test]
#[ignore = "needs PyTorch (.venv): run scripts/test"]
fn reader_matches_pytorch() {
    let (dir, manifest) = make_cases();
    let dir = dir.as_path();
    assert!(
        manifest.len() >= 8,
        "expected all cases, got {:?}",
        manifest.keys()
    );
    for (file, expected) in manifest {
        let ckpt = Checkpoint::open(dir.join(file)).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            ckpt.findings.iter().all(|f| !f.is_unsafe()),
            "{file}: {:?}",
            ckpt.findings
        );
        let by_path: BTreeMap<&str, usize> = ckpt
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.path.as_str(), i))
            .collect();
        let tensors = expected["tensors"].as_object().unwrap();
        assert_eq!(
            by_path.len(),
            tensors.len(),
            "{file}: tvck found {:?}\nPyTorch has {:?}",
            by_path.keys().collect::<Vec<_>>(),
            tensors.keys().collect::<Vec<_>>()
        );
        for (path, t) in tensors {
            let i = *by_path
                .get(path.as_str())
                .unwrap_or_else(|| panic!("{file}: tensor {path} missing"));
            assert_tensor(&ckpt, i, t, &format!("{file}:{path}"));
            assert_eq!(
                ckpt.tensors[i].is_contiguous(),
                t["contiguous"].as_bool().unwrap(),
                "{file}:{path} contiguity"
            );
        }
        for (path, v) in expected["values"].as_object().unwrap() {
            let got =
                lookup(&ckpt.root, path).unwrap_or_else(|| panic!("{file}: value {path} missing"));
            match v {
                Json::Bool(b) => assert_eq!(got.as_bool(), Some(*b), "{file}:{path}"),
                Json::String(s) => assert_eq!(got.as_str(), Some(s.as_str()), "{file}:{path}"),
                Json::Number(n) if n.is_f64() => {
                    assert_eq!(got.as_f64(), n.as_f64(), "{file}:{path}")
                }
                Json::Number(n) => match got {
                    Value::BigInt(s) => assert_eq!(s, &n.to_string(), "{file}:{path}"),
                    other => assert_eq!(other.as_i64(), n.as_i64(), "{file}:{path}: {other:?}"),
                },
                Json::Object(o) if o.contains_key("bigint") => {
                    assert_eq!(
                        got,
                        &Value::BigInt(o["bigint"].as_str().unwrap().to_string()),
                        "{file}:{path}"
                    )
                }
                other => panic!("unexpected manifest value {other:?}"),
            }
        }
    }
}

#[test]
#[ignore = "needs PyTorch (.venv): run scripts/test"]
fn containers_and_details() {
    let (dir, _) = make_cases();
    let dir = dir.as_path();
    let open = |f: &str| Checkpoint::open(dir.join(f)).unwrap();
    assert_eq!(open("training.pt").format, Format::TorchZip);
    assert_eq!(open("training_legacy.pt").format, Format::TorchLegacy);
    assert_eq!(open("weights.safetensors").format, Format::Safetensors);

    // The same weights give the same fingerprint in every container.
    let fp = |f: &str| fingerprint::fingerprint(&open(f)).unwrap().weights;
    let zip = fp("training.pt");
    assert_eq!(zip, fp("training_legacy.pt"));
    assert_eq!(zip, fp("training_proto4.pt"));
    assert_eq!(zip, fp("weights.safetensors"));
    assert_eq!(fp("dtypes.pt"), fp("dtypes_legacy.pt"));
    assert_eq!(fp("views.pt"), fp("views_legacy.pt"));

    // Non-finite floats, big ints, bytes, unicode survive.
    let t = open("training.pt");
    assert!(lookup(&t.root, "history.2")
        .and_then(Value::as_f64)
        .unwrap()
        .is_infinite());
    assert_eq!(
        lookup(&t.root, "blob"),
        Some(&Value::Bytes(b"\x00\x01binary".to_vec()))
    );
    assert_eq!(
        t.model_state().unwrap().root_key.as_deref(),
        Some("model_state_dict")
    );
    assert!(matches!(
        lookup(&t.root, "metrics.coverage"),
        Some(Value::NumpyScalar { dtype, .. }) if dtype == "f8"
    ));

    // Views keep their strides and offsets, and share storage with their base.
    let v = open("views.pt");
    let get = |p: &str| v.tensors.iter().find(|t| t.path == p).unwrap();
    assert_eq!(get("transposed").strides, vec![1, 6]);
    assert_eq!(get("sliced").storage_offset, 8);
    assert_eq!(get("expanded").strides, vec![0, 1]);
    assert_eq!(get("base").storage, get("transposed").storage);
    assert_eq!(get("base").storage, get("sliced").storage);
}

/// Every global `torch.load(weights_only=True)` of PyTorch 2.13 accepts (its
/// `_get_allowed_globals()`, dumped by make_cases.py) is one tvck reads as safe: a
/// legitimate file is never reported unsafe for a dtype, storage class, quantization
/// scheme or rebuild function torch itself allows.
#[test]
#[ignore = "needs PyTorch (.venv): run scripts/test"]
fn every_global_torch_allows_is_safe_to_tvck() {
    let (dir, _) = make_cases();
    let text = std::fs::read_to_string(dir.join("weights_only_globals.json")).unwrap();
    let names: Vec<String> = serde_json::from_str(&text).unwrap();
    assert!(names.len() > 100, "{} globals", names.len());
    let refused: Vec<&String> = names
        .iter()
        .filter(|n| {
            let (module, name) = n.rsplit_once('.').unwrap();
            tvck::format::pickle::allowlist(module, name).is_none()
        })
        .collect();
    assert_eq!(refused, Vec::<&String>::new(), "refused by tvck");
}

/// The dtypes and layouts beyond the manifest's (layouts.json): sparse COO / CSR / CSC /
/// BSR / BSC, nested and meta tensors, per-channel quantized tensors and Parameters. None
/// is reported unsafe; every tensor PyTorch names is read with its dtype, shape and bytes;
/// what tvck reads only as parts is said in a note naming torch's rebuild function.
#[test]
#[ignore = "needs PyTorch (.venv): run scripts/test"]
fn other_layouts_are_read_or_named() {
    let (dir, _) = make_cases();
    let text = std::fs::read_to_string(dir.join("layouts.json")).unwrap();
    let cases: BTreeMap<String, Json> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 10, "{:?}", cases.keys());
    for (file, expected) in &cases {
        let ckpt = Checkpoint::open(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            ckpt.findings.iter().all(|f| !f.is_unsafe()),
            "{file}: {:?}",
            ckpt.findings
        );
        let messages: Vec<String> = ckpt.findings.iter().map(|f| f.message()).collect();
        for note in expected["notes"].as_array().unwrap() {
            let global = note.as_str().unwrap();
            assert!(
                messages
                    .iter()
                    .any(|m| m.contains(&format!("`{global}` kept uninterpreted"))),
                "{file}: no note naming {global}: {messages:?}"
            );
        }
        for (path, t) in expected["tensors"].as_object().unwrap() {
            let i = ckpt
                .tensors
                .iter()
                .position(|x| &x.path == path)
                .unwrap_or_else(|| {
                    panic!(
                        "{file}: tensor {path} missing; tvck read {:?}",
                        ckpt.tensors.iter().map(|x| &x.path).collect::<Vec<_>>()
                    )
                });
            assert_tensor(&ckpt, i, t, &format!("{file}:{path}"));
        }
    }
}
