//! The checkpoint writers (`tvck::format::write`):
//!
//! * proptest: arbitrary dtypes, shapes (incl. zero-sized dims and scalars), bytes and
//!   value trees written as `.pt` / `.safetensors` read back bit-exactly by tvck;
//! * strided / offset / shared / legacy sources are written contiguous and read back equal;
//! * every sample in `checkpoints/` re-written to `.pt` and `.safetensors` keeps its
//!   tensors, fingerprint and values (numpy scalars become plain floats);
//! * `#[ignore]`d: real PyTorch (`torch.load(weights_only=True)`) and
//!   `safetensors.torch.load_file` load what tvck wrote (`tests/python/check_written.py`).
//!   Run with `scripts/test`, or `TVCK_PYTHON=…/python cargo test -- --include-ignored`.

use crate::common;

use common::python;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use tvck::fingerprint;
use tvck::format::write::pt::{self, OrderedDicts, PtOptions};
use tvck::format::write::safetensors::{self as st, TREE_KEY};
use tvck::format::write::{self, TensorData};
use tvck::format::{Checkpoint, DType, Format, Value, MODEL_STATE_KEYS};

// ----- helpers -------------------------------------------------------------------

fn s(x: &str) -> Value {
    Value::Str(x.into())
}

/// Dtypes the `.pt` writer lets require grad.
fn can_require_grad(d: DType) -> bool {
    matches!(
        d,
        DType::F64 | DType::F32 | DType::F16 | DType::BF16 | DType::C64 | DType::C128
    )
}

/// Structural equality with floats compared by bits (NaN payloads included):
/// [`Value::identical`].
fn same(a: &Value, b: &Value) -> bool {
    a.identical(b)
}

/// What a tree looks like after writing: numpy scalars are plain values.
fn plain(v: &Value) -> Value {
    match v {
        Value::NumpyScalar { value, .. } => plain(value),
        Value::List(items) => Value::List(items.iter().map(plain).collect()),
        Value::Tuple(items) => Value::Tuple(items.iter().map(plain).collect()),
        Value::Dict(items) => {
            Value::Dict(items.iter().map(|(k, v)| (plain(k), plain(v))).collect())
        }
        other => other.clone(),
    }
}

fn write_pt_bytes(root: &Value, tensors: &[TensorData<'_>], opts: &PtOptions) -> Vec<u8> {
    let mut out = Vec::new();
    pt::write_pt(root, tensors, opts, &mut out).unwrap_or_else(|e| panic!("{e}"));
    out
}

fn write_st_bytes(
    tensors: &[(String, TensorData<'_>)],
    meta: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut out = Vec::new();
    st::write_safetensors(tensors, meta, &mut out).unwrap_or_else(|e| panic!("{e}"));
    out
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// ----- strategies ------------------------------------------------------------------

fn tensor_strategy(dtypes: Vec<DType>) -> impl Strategy<Value = TensorData<'static>> {
    (
        prop::sample::select(dtypes),
        prop::collection::vec(0u64..4, 0..=4),
        any::<bool>(),
    )
        .prop_flat_map(|(d, shape, rg)| {
            let n = shape.iter().product::<u64>() as usize * d.size();
            (
                Just(d),
                Just(shape),
                prop::collection::vec(any::<u8>(), n),
                Just(rg),
            )
        })
        .prop_map(|(d, shape, mut bytes, rg)| {
            if d == DType::Bool {
                for b in &mut bytes {
                    *b &= 1;
                }
            }
            let mut t = TensorData::new(d, shape, bytes);
            t.requires_grad = rg && can_require_grad(d);
            t
        })
}

/// A view over one storage: (storage offset, shape, strides) in elements.
type View = (u64, Vec<u64>, Vec<u64>);

/// A torch zip whose `data.pkl` is `{"v0": view0, "v1": view1, …}`, every view of the one
/// storage `data/0` (`numel` elements of `dtype`), with arbitrary offsets and strides (zero
/// strides included), as PyTorch writes slices, transposes and `expand`ed tensors.
fn strided_zip(dtype: DType, storage: &[u8], views: &[View]) -> Vec<u8> {
    use tvck::format::write::pickle::{op, Pickler};
    use tvck::format::write::zip::ZipWriter;
    let numel = (storage.len() / dtype.size()) as i64;
    let mut p = Pickler::new();
    p.op(op::EMPTY_DICT);
    for (i, (offset, shape, strides)) in views.iter().enumerate() {
        p.str(&format!("v{i}")).unwrap();
        // A dtype without a legacy storage class goes through `_rebuild_tensor_v3` over
        // an untyped storage (numel in bytes), as torch saves it.
        let class = dtype.storage_name();
        let rebuild = match class {
            Some(_) => "_rebuild_tensor_v2",
            None => "_rebuild_tensor_v3",
        };
        p.global("torch._utils", rebuild).unwrap();
        p.op(op::MARK);
        p.op(op::MARK);
        p.str("storage").unwrap();
        match class {
            Some(c) => p.global("torch", c).unwrap(),
            None => p.global("torch.storage", "UntypedStorage").unwrap(),
        }
        p.str("0").unwrap();
        p.str("cpu").unwrap();
        p.int(if class.is_some() {
            numel
        } else {
            storage.len() as i64
        });
        p.op(op::TUPLE);
        p.op(op::BINPERSID);
        p.int(*offset as i64);
        p.int_tuple(shape).unwrap();
        p.int_tuple(strides).unwrap();
        p.bool(false);
        p.global("collections", "OrderedDict").unwrap();
        p.op(op::EMPTY_TUPLE);
        p.op(op::REDUCE);
        if class.is_none() {
            p.global("torch", dtype.torch_name()).unwrap();
        }
        p.op(op::TUPLE);
        p.op(op::REDUCE);
        p.op(op::SETITEM);
    }
    let pickle = p.finish();
    let mut z = ZipWriter::new(Vec::new());
    z.add("archive/data.pkl", &pickle).unwrap();
    z.add("archive/byteorder", b"little").unwrap();
    z.add("archive/data/0", storage).unwrap();
    z.add("archive/version", b"3\n").unwrap();
    z.finish().unwrap().0
}

/// The logical (row-major) bytes of a view, gathered by hand.
fn gather(dtype: DType, storage: &[u8], (offset, shape, strides): &View) -> Vec<u8> {
    let es = dtype.size();
    let mut out = Vec::new();
    if shape.contains(&0) {
        return out;
    }
    let mut idx = vec![0u64; shape.len()];
    loop {
        let e = offset + idx.iter().zip(strides).map(|(i, s)| i * s).sum::<u64>();
        let e = e as usize * es;
        out.extend_from_slice(&storage[e..e + es]);
        let mut d = shape.len();
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

fn view_strategy() -> impl Strategy<Value = View> {
    prop::collection::vec((0u64..5, 0u64..7), 0..=4).prop_flat_map(|dims| {
        let shape: Vec<u64> = dims.iter().map(|d| d.0).collect();
        let strides: Vec<u64> = dims.iter().map(|d| d.1).collect();
        (0u64..6, Just(shape), Just(strides))
    })
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        prop_oneof![
            (i64::MAX as i128 + 1)..=i128::MAX,
            i128::MIN..(i64::MIN as i128),
        ]
        .prop_map(|v| Value::BigInt(v.to_string())),
        any::<u64>().prop_map(|b| Value::Float(f64::from_bits(b))),
        prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::NAN),
            any::<f64>(),
        ]
        .prop_map(Value::Float),
        any::<String>().prop_map(Value::Str),
        "[a-z_]{0,8}".prop_map(Value::Str),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
    ]
}

fn key() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z_.]{0,6}".prop_map(Value::Str),
        any::<String>().prop_map(Value::Str),
        any::<i64>().prop_map(Value::Int),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
            prop::collection::vec((key(), inner), 0..6).prop_map(|items| {
                let mut seen = HashSet::new();
                Value::Dict(
                    items
                        .into_iter()
                        .filter(|(k, _)| seen.insert(format!("{k:?}")))
                        .collect(),
                )
            }),
        ]
    })
}

/// `{"tree": tree, "tensors": [T0, T1, …], "again": T0}` (T0 referenced twice).
/// `v` with every tensor index `j` replaced by `map(j)`.
fn renumber(v: &Value, map: &dyn Fn(usize) -> usize) -> Value {
    match v {
        Value::Tensor(j) => Value::Tensor(map(*j)),
        Value::List(items) => Value::List(items.iter().map(|x| renumber(x, map)).collect()),
        Value::Tuple(items) => Value::Tuple(items.iter().map(|x| renumber(x, map)).collect()),
        Value::Dict(items) => Value::Dict(
            items
                .iter()
                .map(|(k, x)| (k.clone(), renumber(x, map)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn root_with(tree: Value, n: usize) -> Value {
    let mut items = vec![
        (s("tree"), tree),
        (
            s("tensors"),
            Value::List((0..n).map(Value::Tensor).collect()),
        ),
    ];
    if n > 0 {
        items.push((s("again"), Value::Tensor(0)));
    }
    Value::Dict(items)
}

fn safetensors_dtypes() -> Vec<DType> {
    DType::ALL
        .into_iter()
        .filter(|d| write::safetensors::can_hold(*d))
        .collect()
}

/// The dtypes the .pt writer writes: all but the quantized ones (their scale and zero
/// point are not tensor data).
fn pt_dtypes() -> Vec<DType> {
    DType::ALL
        .into_iter()
        .filter(|d| !d.is_quantized())
        .collect()
}

fn named_tensors() -> impl Strategy<Value = Vec<(String, TensorData<'static>)>> {
    prop::collection::vec(
        (
            prop_oneof!["[a-z0-9._]{0,10}", any::<String>()],
            tensor_strategy(safetensors_dtypes()),
        ),
        0..6,
    )
    .prop_map(|v| {
        let mut seen = HashSet::new();
        v.into_iter()
            .filter(|(n, _)| n != "__metadata__" && seen.insert(n.clone()))
            .collect()
    })
}

// ----- round trips through tvck's reader ------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 160,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn pt_round_trips(
        tree in tree(),
        tensors in prop::collection::vec(tensor_strategy(pt_dtypes()), 0..5),
        zip64 in any::<bool>(),
    ) {
        let root = root_with(tree, tensors.len());
        let opts = PtOptions { force_zip64: zip64, ..PtOptions::default() };
        let c = Checkpoint::from_bytes("p.pt", write_pt_bytes(&root, &tensors, &opts))
            .unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(c.format, Format::TorchZip);
        prop_assert!(c.findings.is_empty(), "{:?}", c.findings);
        prop_assert!(same(&c.root, &root), "read {:?}\nwrote {:?}", c.root, root);
        prop_assert_eq!(c.tensors.len(), tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            let r = &c.tensors[i];
            prop_assert_eq!((r.dtype, &r.shape, r.requires_grad), (t.dtype, &t.shape, t.requires_grad));
            prop_assert_eq!(&*c.tensor_bytes(i).unwrap(), &*t.bytes);
        }
    }

    /// Any dtype and any set of views (offsets, shapes, strides — zero, overlapping,
    /// transposed) over a shared storage: read gives each view's logical bytes, and
    /// pt-write → read gives them back bit-exactly, now contiguous and unshared.
    #[test]
    fn strided_views_round_trip_bit_exactly(
        dtype in prop::sample::select(pt_dtypes()),
        views in prop::collection::vec(view_strategy(), 1..5),
        extra in 0u64..4,
        seed in any::<u64>(),
    ) {
        let needed = views
            .iter()
            .map(|(o, sh, st)| {
                if sh.contains(&0) { 0 } else { o + sh.iter().zip(st).map(|(d, s)| (d - 1) * s).sum::<u64>() + 1 }
            })
            .max()
            .unwrap_or(0)
            + extra;
        let mut x = seed;
        let mut storage: Vec<u8> = (0..needed as usize * dtype.size())
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect();
        if dtype == DType::Bool {
            storage.iter_mut().for_each(|b| *b &= 1);
        }
        let c = Checkpoint::from_bytes("views.pt", strided_zip(dtype, &storage, &views))
            .unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(c.tensors.len(), views.len());
        for (i, v) in views.iter().enumerate() {
            prop_assert_eq!(&c.tensors[i].shape, &v.1);
            prop_assert_eq!(&*c.tensor_bytes(i).unwrap(), &gather(dtype, &storage, v)[..]);
        }
        let tensors = write::tensors_from_checkpoint(&c).unwrap();
        let b = Checkpoint::from_bytes("out.pt", write_pt_bytes(&c.root, &tensors, &PtOptions::default()))
            .unwrap_or_else(|e| panic!("{e}"));
        for (i, v) in views.iter().enumerate() {
            prop_assert!(b.tensors[i].is_contiguous() && b.tensors[i].storage_offset == 0);
            prop_assert_eq!((b.tensors[i].dtype, &b.tensors[i].shape), (dtype, &v.1));
            prop_assert_eq!(&*b.tensor_bytes(i).unwrap(), &gather(dtype, &storage, v)[..]);
        }
    }

    #[test]
    fn safetensors_round_trips(
        tensors in named_tensors(),
        meta in prop::collection::btree_map("[a-z.]{1,8}", any::<String>(), 0..3),
        tree in tree(),
    ) {
        // Without a tree: flat tensors by name, metadata under `__metadata__`.
        let c = Checkpoint::from_bytes("s.safetensors", write_st_bytes(&tensors, &meta))
            .unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(c.format, Format::Safetensors);
        prop_assert_eq!(c.tensors.len(), tensors.len());
        for (name, t) in &tensors {
            let i = c.tensors.iter().position(|r| &r.path == name).expect("tensor by name");
            prop_assert_eq!((c.tensors[i].dtype, &c.tensors[i].shape), (t.dtype, &t.shape));
            prop_assert_eq!(&*c.tensor_bytes(i).unwrap(), &*t.bytes);
        }
        if !meta.is_empty() {
            let got_meta: BTreeMap<String, String> = match c.root.get("__metadata__") {
                Some(Value::Dict(items)) => items
                    .iter()
                    .map(|(k, v)| (k.as_str().unwrap().to_string(), v.as_str().unwrap().to_string()))
                    .collect(),
                other => panic!("no metadata: {other:?}"),
            };
            prop_assert_eq!(&got_meta, &meta);
        }

        // With a tvck tree: the reader gives the checkpoint's own tree back.
        let names: Vec<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
        let root = root_with(tree, tensors.len());
        let mut meta = meta;
        meta.insert(TREE_KEY.into(), st::tree_json(&root, &names).unwrap());
        let c = Checkpoint::from_bytes("s.safetensors", write_st_bytes(&tensors, &meta))
            .unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(c.tensors.len(), tensors.len());
        let listed = match c.root.get("tensors") {
            Some(Value::List(items)) => items.clone(),
            other => panic!("no tensor list: {other:?}"),
        };
        prop_assert_eq!(listed.len(), tensors.len());
        let mut to_source = vec![usize::MAX; tensors.len()];
        for (i, v) in listed.iter().enumerate() {
            let Value::Tensor(j) = v else { panic!("not a tensor: {v:?}") };
            to_source[*j] = i;
            let t = &tensors[i].1;
            prop_assert_eq!((c.tensors[*j].dtype, &c.tensors[*j].shape), (t.dtype, &t.shape));
            prop_assert_eq!(&*c.tensor_bytes(*j).unwrap(), &*t.bytes);
            prop_assert_eq!(&c.tensors[*j].path, &format!("tensors.{i}"));
        }
        prop_assert!(same(&renumber(&c.root, &|j| to_source[j]), &root));
    }
}

#[test]
fn strided_and_legacy_sources_are_written_contiguous() {
    // Legacy file with a transposed view, a storage offset and a storage view.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pickles/legacy_views.pt"
    );
    let c = Checkpoint::open(path).unwrap();
    assert_eq!(c.format, Format::TorchLegacy);
    assert!(c.tensors.iter().any(|t| !t.is_contiguous()));
    assert!(c.tensors.iter().any(|t| t.storage_offset > 0));
    let tensors = write::tensors_from_checkpoint(&c).unwrap();
    let b = Checkpoint::from_bytes(
        "v.pt",
        write_pt_bytes(&c.root, &tensors, &PtOptions::default()),
    )
    .unwrap();
    assert!(same(&b.root, &plain(&c.root)));
    for (i, (x, y)) in c.tensors.iter().zip(&b.tensors).enumerate() {
        assert_eq!((&x.path, x.dtype, &x.shape), (&y.path, y.dtype, &y.shape));
        assert!(y.is_contiguous() && y.storage_offset == 0, "{}", y.path);
        assert_eq!(c.tensor_bytes(i).unwrap(), b.tensor_bytes(i).unwrap());
    }
    let named = write::path_tensors(&c).unwrap();
    let s =
        Checkpoint::from_bytes("v.safetensors", write_st_bytes(&named, &BTreeMap::new())).unwrap();
    for (i, x) in c.tensors.iter().enumerate() {
        let j = s.tensors.iter().position(|t| t.path == x.path).unwrap();
        assert_eq!(c.tensor_bytes(i).unwrap(), s.tensor_bytes(j).unwrap());
    }
}

// ----- the samples ---------------------------------------------------------------

fn samples() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints");
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(&root)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("pt" | "pth" | "safetensors")
                )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 8, "samples: {out:?}");
    out
}

/// `v5_12_4/best_Q.pt` → `v5_12_4__best_Q`.
fn sample_stem(p: &Path) -> String {
    let rel = p
        .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints"))
        .unwrap();
    rel.with_extension("")
        .to_string_lossy()
        .replace(['/', '\\'], "__")
}

fn assert_same_tensors(what: &str, a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.tensors.len(), b.tensors.len(), "{what}");
    for (i, (x, y)) in a.tensors.iter().zip(&b.tensors).enumerate() {
        assert_eq!(
            (&x.path, x.dtype, &x.shape),
            (&y.path, y.dtype, &y.shape),
            "{what}"
        );
        assert_eq!(
            a.tensor_bytes(i).unwrap(),
            b.tensor_bytes(i).unwrap(),
            "{what}: {}",
            x.path
        );
    }
}

#[test]
fn every_sample_rewrites_losslessly() {
    let dir = tempfile::tempdir().unwrap();
    for path in samples() {
        let stem = sample_stem(&path);
        let c = Checkpoint::open(&path).unwrap();
        let fp = fingerprint::fingerprint(&c).unwrap().weights;
        let tensors = write::tensors_from_checkpoint(&c).unwrap();

        // .pt: same tensors (paths, dtypes, shapes, bytes), values, fingerprint
        let out = dir.path().join(format!("{stem}.pt"));
        write::write_atomic(&out, false, |w| {
            pt::write_pt(&c.root, &tensors, &PtOptions::default(), w)
        })
        .unwrap();
        let b = Checkpoint::open(&out).unwrap();
        assert_eq!(b.format, Format::TorchZip, "{stem}");
        assert!(b.findings.is_empty(), "{stem}: {:?}", b.findings);
        assert_same_tensors(&stem, &c, &b);
        assert!(
            same(&b.root, &plain(&c.root)),
            "{stem}: values differ:\n{:?}\n{:?}",
            b.root,
            c.root
        );
        assert_eq!(fingerprint::fingerprint(&b).unwrap().weights, fp, "{stem}");
        // a second write refuses to overwrite
        let again = write::write_atomic(&out, false, |w| {
            pt::write_pt(&c.root, &tensors, &PtOptions::default(), w)
        });
        assert!(matches!(again, Err(write::WriteError::Exists(_))));

        // .safetensors with every tensor by path, plus the tree as JSON metadata
        let named = write::path_tensors(&c).unwrap();
        let names: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
        let meta = BTreeMap::from([(
            TREE_KEY.to_string(),
            st::tree_json(&c.root, &names).unwrap(),
        )]);
        let out = dir.path().join(format!("{stem}.all.safetensors"));
        write::write_atomic(&out, false, |w| st::write_safetensors(&named, &meta, w)).unwrap();
        let s = Checkpoint::open(&out).unwrap();
        assert_eq!(s.format, Format::Safetensors);
        assert_eq!(s.tensors.len(), c.tensors.len(), "{stem}");
        for (i, x) in c.tensors.iter().enumerate() {
            let j = s
                .tensors
                .iter()
                .position(|t| t.path == x.path)
                .unwrap_or_else(|| panic!("{stem}: no {}", x.path));
            assert_eq!(
                (x.dtype, &x.shape),
                (s.tensors[j].dtype, &s.tensors[j].shape)
            );
            assert_eq!(c.tensor_bytes(i).unwrap(), s.tensor_bytes(j).unwrap());
        }
        // The reader rebuilds the tree from `tvck.tree`: the same tree, tensors renumbered.
        let to_source = |j: usize| {
            c.tensors
                .iter()
                .position(|t| t.path == s.tensors[j].path)
                .unwrap()
        };
        assert!(
            same(&renumber(&s.root, &to_source), &c.root),
            "{stem}: tree differs"
        );

        // .safetensors of the model state (state-dict keys): same weights fingerprint
        let sd = write::state_dict_tensors(&c).unwrap();
        let out = dir.path().join(format!("{stem}.safetensors"));
        write::write_atomic(&out, false, |w| {
            st::write_safetensors(&sd, &BTreeMap::new(), w)
        })
        .unwrap();
        let s = Checkpoint::open(&out).unwrap();
        assert_eq!(fingerprint::fingerprint(&s).unwrap().weights, fp, "{stem}");
    }
}

#[test]
fn numpy_scalars_become_plain_floats() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/v5_12_4/best_Q.pt");
    let c = Checkpoint::open(&path).unwrap();
    fn count(v: &Value) -> usize {
        match v {
            Value::NumpyScalar { .. } => 1,
            Value::List(i) | Value::Tuple(i) => i.iter().map(count).sum(),
            Value::Dict(i) => i.iter().map(|(k, v)| count(k) + count(v)).sum(),
            _ => 0,
        }
    }
    assert!(count(&c.root) > 0, "the sample has numpy scalars");
    let tensors = write::tensors_from_checkpoint(&c).unwrap();
    let b = Checkpoint::from_bytes(
        "q.pt",
        write_pt_bytes(&c.root, &tensors, &PtOptions::default()),
    )
    .unwrap();
    assert_eq!(count(&b.root), 0);
    assert!(!b.has_unsafe_globals());
}

// ----- PyTorch interop -----------------------------------------------------------

/// Which dicts the default `OrderedDicts::ModelState` rule writes as `OrderedDict`
/// (mirrors `Checkpoint::model_state`).
fn model_state_dict(root: &Value) -> Option<&Value> {
    let holds = |v: &Value| match v {
        Value::Dict(items) => items
            .iter()
            .any(|(k, v)| matches!((k, v), (Value::Str(_), Value::Tensor(_)))),
        _ => false,
    };
    for key in MODEL_STATE_KEYS {
        if let Some(v) = root.get(key) {
            if holds(v) {
                return Some(v);
            }
        }
    }
    holds(root).then_some(root)
}

fn tensor_desc(t: &TensorData<'_>) -> Json {
    json!({
        "dtype": t.dtype.torch_name(),
        "shape": t.shape,
        "sha256": sha(&t.bytes),
        "requires_grad": t.requires_grad,
    })
}

fn fbits(f: f64) -> String {
    format!("{:016x}", f.to_bits())
}

/// The canonical JSON form `check_written.py` computes from what Python loads.
fn canon(v: &Value, tensors: &[TensorData<'_>], ordered: &dyn Fn(&Value) -> bool) -> Json {
    let c = |v: &Value| canon(v, tensors, ordered);
    match v {
        Value::None => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!({ "int": i.to_string() }),
        Value::BigInt(s) => json!({ "int": s }),
        Value::Float(f) => json!({ "float": fbits(*f) }),
        Value::Str(x) => json!({ "str": x }),
        Value::Bytes(b) => json!({ "bytes": hex::encode(b) }),
        Value::List(items) => json!({ "list": items.iter().map(c).collect::<Vec<_>>() }),
        Value::Tuple(items) => json!({ "tuple": items.iter().map(c).collect::<Vec<_>>() }),
        Value::Dict(items) => json!({
            "dict": items.iter().map(|(k, v)| json!([c(k), c(v)])).collect::<Vec<_>>(),
            "ordered": ordered(v),
        }),
        Value::Tensor(i) => json!({ "tensor": tensor_desc(&tensors[*i]) }),
        Value::NumpyScalar { value, .. } => c(value),
        Value::Object { class, args, .. } if class == "builtins.complex" => {
            let part = |v: Option<&Value>| match v {
                Some(Value::Float(f)) => fbits(*f),
                _ => fbits(0.0),
            };
            json!({ "complex": [part(args.first()), part(args.get(1))] })
        }
        Value::Global(g) => {
            let d = DType::from_torch_name(g.trim_start_matches("torch.")).unwrap();
            json!({ "dtype": format!("torch.{}", d.torch_name()) })
        }
        other => panic!("not writable: {other:?}"),
    }
}

struct Interop {
    dir: PathBuf,
    pt: serde_json::Map<String, Json>,
    st: serde_json::Map<String, Json>,
}

impl Interop {
    fn pt(&mut self, name: &str, root: &Value, tensors: &[TensorData<'_>], opts: &PtOptions) {
        let path = self.dir.join(name);
        write::write_atomic(&path, false, |w| pt::write_pt(root, tensors, opts, w))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ms = model_state_dict(root);
        let rule = opts.ordered_dicts;
        let ordered = move |v: &Value| match rule {
            OrderedDicts::ModelState => ms.is_some_and(|m| std::ptr::eq(m, v)),
            OrderedDicts::All => true,
            OrderedDicts::None => false,
            OrderedDicts::TensorDicts => match v {
                Value::Dict(items) => {
                    !items.is_empty()
                        && items
                            .iter()
                            .all(|(k, v)| matches!((k, v), (Value::Str(_), Value::Tensor(_))))
                }
                _ => false,
            },
        };
        // tvck reads it back first (the 66 000-tensor file too: storage lookup is hashed)
        let c = Checkpoint::open(&path).unwrap();
        assert!(c.findings.is_empty(), "{name}: {:?}", c.findings);
        assert_eq!(c.tensors.len(), tensors.len(), "{name}");
        self.pt.insert(
            name.into(),
            json!({
                "expected": canon(root, tensors, &ordered),
                "archive": opts.archive_name,
                "zip64": opts.force_zip64,
            }),
        );
    }

    fn st(
        &mut self,
        name: &str,
        tensors: &[(String, TensorData<'_>)],
        meta: &BTreeMap<String, String>,
    ) {
        let path = self.dir.join(name);
        write::write_atomic(&path, false, |w| st::write_safetensors(tensors, meta, w))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let descs: serde_json::Map<String, Json> = tensors
            .iter()
            .map(|(n, t)| {
                let mut d = tensor_desc(t);
                d["requires_grad"] = json!(false);
                (n.clone(), d)
            })
            .collect();
        self.st
            .insert(name.into(), json!({ "tensors": descs, "metadata": meta }));
    }
}

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
#[ignore = "needs PyTorch (.venv): run scripts/test"]
fn pytorch_loads_what_tvck_writes() {
    let python = python();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("writer-interop");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut io = Interop {
        dir: dir.clone(),
        pt: Default::default(),
        st: Default::default(),
    };
    let default = PtOptions::default();

    // 1. every sample, re-written
    for path in samples() {
        let stem = sample_stem(&path);
        let c = Checkpoint::open(&path).unwrap();
        let tensors = write::tensors_from_checkpoint(&c).unwrap();
        io.pt(&format!("{stem}.pt"), &c.root, &tensors, &default);
        let sd = write::state_dict_tensors(&c).unwrap();
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        io.st(&format!("{stem}.safetensors"), &sd, &meta);
    }

    // 2. every dtype × shapes (scalars, empty, zero-sized dims), some requiring grad
    let shapes: [&[u64]; 6] = [&[], &[0], &[5], &[2, 3], &[2, 0, 3], &[1, 2, 1, 3]];
    let mut tensors = Vec::new();
    let mut names = Vec::new();
    for (i, d) in pt_dtypes().iter().enumerate() {
        for (j, shape) in shapes.iter().enumerate() {
            let n = shape.iter().product::<u64>() as usize * d.size();
            let mut bytes = noise((i * 10 + j) as u64, n);
            if *d == DType::Bool {
                bytes.iter_mut().for_each(|b| *b &= 1);
            }
            let mut t = TensorData::new(*d, shape.to_vec(), bytes);
            t.requires_grad = j == 3 && can_require_grad(*d);
            names.push(format!("{}_{j}", d.torch_name()));
            tensors.push(t);
        }
    }
    let sd = Value::Dict(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (s(n), Value::Tensor(i)))
            .collect(),
    );
    let root = Value::Dict(vec![
        (s("model_state_dict"), sd),
        (s("epoch"), Value::Int(7)),
    ]);
    io.pt("dtypes.pt", &root, &tensors, &default);
    io.pt(
        "dtypes_zip64.pt",
        &root,
        &tensors,
        &PtOptions {
            force_zip64: true,
            archive_name: "dtypes_zip64".into(),
            ..PtOptions::default()
        },
    );
    let named: Vec<(String, TensorData<'_>)> = names
        .iter()
        .cloned()
        .zip(tensors.iter().map(TensorData::borrowed))
        .filter(|(_, t)| st::can_hold(t.dtype))
        .map(|(n, mut t)| {
            t.requires_grad = false;
            (n, t)
        })
        .collect();
    io.st("dtypes.safetensors", &named, &BTreeMap::new());

    // 3. every kind of value
    let np = |dtype: &str, v: Value| Value::NumpyScalar {
        dtype: dtype.into(),
        value: Box::new(v),
    };
    let values = Value::Dict(vec![
        (s("none"), Value::None),
        (
            s("bools"),
            Value::List(vec![Value::Bool(true), Value::Bool(false)]),
        ),
        (
            s("ints"),
            Value::List(
                [
                    0,
                    255,
                    256,
                    65535,
                    65536,
                    -1,
                    -129,
                    i32::MIN as i64,
                    i32::MAX as i64 + 1,
                    i64::MIN,
                    i64::MAX,
                ]
                .into_iter()
                .map(Value::Int)
                .collect(),
            ),
        ),
        (
            s("big"),
            Value::Tuple(vec![
                Value::BigInt("1180591620717411303424".into()),
                Value::BigInt("-1180591620717411303424".into()),
                Value::BigInt("9223372036854775808".into()),
                Value::BigInt(format!("{}", u128::MAX)),
            ]),
        ),
        (
            s("floats"),
            Value::List(
                [
                    0.0,
                    -0.0,
                    1.5,
                    1e-310,
                    f64::MAX,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    f64::NAN,
                ]
                .into_iter()
                .map(Value::Float)
                .collect(),
            ),
        ),
        (s("text"), s("naïve ✓ \u{1F600} \0 \n")),
        (s("bytes"), Value::Bytes((0..=255).collect())),
        (s("empty_bytes"), Value::Bytes(vec![])),
        (
            s("nested"),
            Value::Dict(vec![
                (Value::Int(1), Value::Tuple(vec![])),
                (Value::Int(-2), Value::Tuple(vec![Value::None])),
                (Value::Bool(false), Value::Dict(vec![])),
                (Value::None, Value::List(vec![])),
                (
                    Value::Tuple(vec![Value::Int(1), s("a")]),
                    Value::Tuple((0..5).map(Value::Int).collect()),
                ),
                (
                    Value::Float(2.5),
                    Value::List(vec![Value::List(vec![Value::Int(3)])]),
                ),
                (Value::Bytes(b"k".to_vec()), s("bytes key")),
            ]),
        ),
        (
            s("numpy"),
            Value::Dict(vec![
                (s("f8"), np("f8", Value::Float(0.1))),
                (s("f4"), np("f4", Value::Float(f64::from(0.1f32)))),
                (s("i8"), np("i8", Value::Int(-3))),
                (s("b1"), np("b1", Value::Bool(true))),
            ]),
        ),
        (
            s("complex"),
            Value::Object {
                class: "builtins.complex".into(),
                args: vec![Value::Float(1.5), Value::Float(-0.0)],
                state: None,
            },
        ),
        (s("dtype"), Value::Global("torch.bfloat16".into())),
        (
            s("long_list"),
            Value::List((0..2345).map(Value::Int).collect()),
        ),
        (
            s("big_dict"),
            Value::Dict((0..1500).map(|i| (Value::Int(i), Value::Int(-i))).collect()),
        ),
        (s("t"), Value::Tensor(0)),
        (s("t_again"), Value::List(vec![Value::Tensor(0)])),
    ]);
    let one = [TensorData::new(DType::F32, vec![2], noise(99, 8))];
    io.pt("values.pt", &values, &one, &default);
    io.pt(
        "values_all_ordered.pt",
        &values,
        &one,
        &PtOptions {
            ordered_dicts: OrderedDicts::All,
            ..PtOptions::default()
        },
    );
    io.pt(
        "values_tensor_dicts.pt",
        &root,
        &tensors,
        &PtOptions {
            ordered_dicts: OrderedDicts::TensorDicts,
            ..PtOptions::default()
        },
    );
    io.pt("bare_tensor.pt", &Value::Tensor(0), &one, &default);

    // 4. random cases from the proptest strategies (fixed seed)
    let mut runner = TestRunner::deterministic();
    let case = (
        tree(),
        prop::collection::vec(tensor_strategy(pt_dtypes()), 0..5),
        named_tensors(),
    );
    for k in 0..24 {
        let (tree, tensors, named) = case.new_tree(&mut runner).unwrap().current();
        let root = root_with(tree, tensors.len());
        let opts = PtOptions {
            force_zip64: k % 3 == 0,
            ..PtOptions::default()
        };
        io.pt(&format!("random_{k}.pt"), &root, &tensors, &opts);
        let meta = if k % 2 == 0 {
            BTreeMap::new()
        } else {
            BTreeMap::from([("k".to_string(), format!("case {k} ✓"))])
        };
        io.st(&format!("random_{k}.safetensors"), &named, &meta);
    }

    // 5. more than 65535 zip entries (ZIP64 end record counts)
    let many: Vec<TensorData<'_>> = (0..66_000u32)
        .map(|i| TensorData::new(DType::U8, vec![], vec![(i % 251) as u8]))
        .collect();
    let root = Value::List((0..many.len()).map(Value::Tensor).collect());
    io.pt("many.pt", &root, &many, &default);

    let manifest = json!({ "pt": io.pt, "safetensors": io.st });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_written.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check_written.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("all ok"), "{stdout}\n{stderr}");
    println!("{stdout}");
}

/// A tree nested deeper than a format holds: both writers stop with the typed limit
/// (which limit, its maximum, the depth found), without recursion on the thread's stack
/// and without writing a byte; a tree at the limit is written and read back.
#[test]
fn writers_refuse_trees_deeper_than_their_limit() {
    use tvck::format::limits::MAX_DEPTH;
    use tvck::format::write::safetensors::MAX_TREE_DEPTH;
    use tvck::format::write::{WriteError, WriteLimit};
    fn nested(depth: usize) -> Value {
        let mut v = Value::Int(1);
        for _ in 0..depth {
            v = Value::List(vec![v]);
        }
        v
    }
    let deep = nested(4 * MAX_DEPTH);
    let mut out = Vec::new();
    match write::pt::write_pt(&deep, &[], &PtOptions::default(), &mut out) {
        Err(WriteError::Limit {
            limit: WriteLimit::Depth,
            max,
            found,
            ..
        }) => {
            assert_eq!(max, MAX_DEPTH as u64);
            assert!(found > max, "{found}");
        }
        other => panic!("expected the depth limit, got {other:?}"),
    }
    assert!(out.is_empty(), "nothing written before the refusal");
    match write::safetensors::tree_json(&nested(4 * MAX_TREE_DEPTH), &[]) {
        Err(WriteError::Limit {
            limit: WriteLimit::JsonDepth,
            max,
            found,
            ..
        }) => {
            assert_eq!(max, MAX_TREE_DEPTH as u64);
            assert!(found > max, "{found}");
        }
        other => panic!("expected the JSON depth limit, got {other:?}"),
    }
    // At the limits: written, and read back to the same tree.
    let ok = nested(MAX_DEPTH - 2);
    let mut bytes = Vec::new();
    write::pt::write_pt(&ok, &[], &PtOptions::default(), &mut bytes).unwrap();
    let back = tvck::format::Checkpoint::from_bytes("deep.pt", bytes).unwrap();
    assert_eq!(back.root, ok);
    write::safetensors::tree_json(&nested(MAX_TREE_DEPTH - 2), &[]).unwrap();
}
