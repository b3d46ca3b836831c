//! The transforming ops of migration specs (slice, pad, transpose, reshape, seeded init)
//! end to end: a synthetic v5.5 checkpoint with extra tensors, a user spec that builds parts
//! of the v5.11 projection from them, `convert_file`, and the bytes read back.

use std::collections::BTreeMap;

use tvck::arch::{self, VersionId};
use tvck::format::write::{self, pt, TensorData};
use tvck::format::{Checkpoint, DType, Value};
use tvck::migrate::{self, ConvertOptions, OutputFormat, SpecSet};

fn f32s(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn back(b: &[u8]) -> Vec<f32> {
    b.chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

const SPEC_EDITS: [(&str, &str); 3] = [
    (
        "  - op: init\n    to: projection.direction_net.0\n    tensors:\n      weight: {shape: \"[H, L]\", init: {linear_default: {fan_in: L}, seed: 5511}}\n      bias: {shape: \"[H]\", init: {linear_default: {fan_in: L}, seed: 5511}}\n",
        "  - op: slice\n    from: extra.big\n    to: projection.direction_net.0.weight\n    ranges: [[0, 64], [2, 18]]\n    shape: \"[128, 20] -> [H, L]\"\n  - op: pad\n    from: extra.short\n    to: projection.direction_net.0.bias\n    pad: [[1, 3]]\n    value: 0.5\n    shape: \"[60] -> [H]\"\n",
    ),
    (
        "  - op: init\n    to: projection.direction_net.3\n    tensors:\n      weight: {shape: \"[L, H]\", init: {linear_default: {fan_in: H}, seed: 5511}}\n",
        "  - op: transpose\n    from: extra.t\n    to: projection.direction_net.3.weight\n    perm: [1, 0]\n    shape: \"[64, 16] -> [L, H]\"\n  - op: init\n    to: projection.direction_net.3\n    tensors:\n",
    ),
    (
        "  - op: init\n    to: projection.radius_net.0\n    tensors:\n      weight: {shape: \"[R, L]\", init: {linear_default: {fan_in: L}, seed: 5511}}\n",
        "  - op: reshape\n    from: extra.flat\n    to: projection.radius_net.0.weight\n    shape: \"[512] -> [R, L]\"\n  - op: init\n    to: projection.radius_net.0\n    tensors:\n",
    ),
];

/// A v5.5 model state (values = element index) plus four extra tensors, written to
/// `dir/synthetic.pt`.
fn synthetic(dir: &std::path::Path) -> std::path::PathBuf {
    let layout = arch::expected_layout(VersionId::V5_5, &arch::default_params(VersionId::V5_5));
    let mut tensors: Vec<TensorData<'static>> = Vec::new();
    let mut state = Vec::new();
    let mut add = |name: &str, shape: Vec<u64>, state: &mut Vec<(Value, Value)>| {
        let n: u64 = shape.iter().product();
        tensors.push(TensorData::new(
            DType::F32,
            shape,
            f32s((0..n).map(|i| i as f32)),
        ));
        state.push((Value::Str(name.into()), Value::Tensor(tensors.len() - 1)));
    };
    for (k, s) in &layout {
        add(k, s.clone(), &mut state);
    }
    add("extra.big", vec![128, 20], &mut state);
    add("extra.short", vec![60], &mut state);
    add("extra.t", vec![64, 16], &mut state);
    add("extra.flat", vec![512], &mut state);
    // A non-model tensor the tree holds twice (as torch.save keeps a shared tensor).
    tensors.push(TensorData::new(DType::F32, vec![3], f32s([1.0, 2.0, 3.0])));
    let shared = Value::Tensor(tensors.len() - 1);
    let root = Value::Dict(vec![
        (Value::Str("epoch".into()), Value::Int(7)),
        (Value::Str("model".into()), Value::Dict(state)),
        (
            Value::Str("ema".into()),
            Value::Dict(vec![
                (Value::Str("a".into()), shared.clone()),
                (Value::Str("b".into()), shared),
            ]),
        ),
    ]);
    let src = dir.join("synthetic.pt");
    write::write_atomic(&src, false, |w| {
        pt::write_pt(&root, &tensors, &pt::PtOptions::default(), w)
    })
    .unwrap();

    src
}

/// The embedded v5.5 → v5.11 spec with `edits`, as a spec folder in `dir`.
fn specs_with(dir: &std::path::Path, edits: &[(&str, &str)]) -> SpecSet {
    let mut text = migrate::EMBEDDED_SPECS[0].1.to_string();
    for (from, to) in edits {
        assert!(text.contains(from), "edit target missing: {from}");
        text = text.replace(from, to);
    }
    let specs_dir = dir.join("specs");
    std::fs::create_dir(&specs_dir).unwrap();
    std::fs::write(specs_dir.join("v5_5_to_v5_11.yaml"), &text).unwrap();
    SpecSet::with_dir(&specs_dir).unwrap()
}

#[test]
fn slice_pad_transpose_reshape_and_seeded_init_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let src = synthetic(dir.path());
    // The user spec: the embedded v5.5 → v5.11 spec with the edits above.
    let specs = specs_with(dir.path(), &SPEC_EDITS);

    let out = dir.path().join("out.pt");
    let opts = ConvertOptions {
        to: VersionId::V5_11,
        format: OutputFormat::Pt,
        force: false,
        dry_run: false,
        refine: None,
    };
    let c = migrate::convert_file(&src, &out, &specs, &opts).unwrap();
    let ops: BTreeMap<&str, &str> = c.plan.steps[0]
        .rows
        .iter()
        .filter_map(|r| r.to.as_ref().map(|(k, _)| (k.as_str(), r.op)))
        .collect();
    assert_eq!(ops["projection.direction_net.0.weight"], "slice");
    assert_eq!(ops["projection.direction_net.0.bias"], "pad");
    assert_eq!(ops["projection.direction_net.3.weight"], "transpose");
    assert_eq!(ops["projection.radius_net.0.weight"], "reshape");
    assert_eq!(c.plan.steps[0].summary.transformed, 3);

    let r = Checkpoint::open(&out).unwrap();
    let ms = r.model_state_ref().unwrap();
    let get = |key: &str| {
        let i = ms.entries.iter().find(|(k, _)| *k == key).unwrap().1;
        (
            r.tensors[i].shape.clone(),
            back(&r.tensor_bytes(i).unwrap()),
        )
    };
    // slice [0:64, 2:18] of a [128, 20] arange: row i, column j → 20 i + 2 + j.
    let (shape, v) = get("projection.direction_net.0.weight");
    assert_eq!(shape, [64, 16]);
    assert_eq!(v[0], 2.0);
    assert_eq!(v[16], 22.0);
    assert_eq!(v[63 * 16 + 15], (63 * 20 + 17) as f32);
    // pad [1, 3] with 0.5 of a [60] arange.
    let (shape, v) = get("projection.direction_net.0.bias");
    assert_eq!(shape, [64]);
    assert_eq!(&v[..3], &[0.5, 0.0, 1.0]);
    assert_eq!(&v[60..], &[59.0, 0.5, 0.5, 0.5]);
    // transpose of a [64, 16] arange: out[i][j] = in[j][i] = 16 j + i.
    let (shape, v) = get("projection.direction_net.3.weight");
    assert_eq!(shape, [16, 64]);
    assert_eq!(v[1], 16.0);
    assert_eq!(v[64 + 2], 33.0);
    // reshape keeps the bytes.
    let (shape, v) = get("projection.radius_net.0.weight");
    assert_eq!(shape, [32, 16]);
    assert_eq!(v, (0..512).map(|i| i as f32).collect::<Vec<_>>());
    // Seeded init: within PyTorch's Linear bound, not constant, and reproducible.
    let (_, v) = get("projection.radius_net.2.weight");
    let bound = 1.0 / (32f32).sqrt();
    assert!(v.iter().all(|x| x.abs() <= bound) && v.iter().any(|x| *x != v[0]));
    let again = dir.path().join("again.pt");
    migrate::convert_file(&src, &again, &specs, &opts).unwrap();
    let r2 = Checkpoint::open(&again).unwrap();
    let ms2 = r2.model_state_ref().unwrap();
    for ((k1, i1), (k2, i2)) in ms.entries.iter().zip(&ms2.entries) {
        assert_eq!(k1, k2);
        assert_eq!(
            r.tensor_bytes(*i1).unwrap(),
            r2.tensor_bytes(*i2).unwrap(),
            "{k1}"
        );
    }
    // decoder_B / state_net / EMA buffers dropped; the copies untouched.
    assert!(ms
        .entries
        .iter()
        .all(|(k, _)| !k.starts_with("decoder_B") && !k.starts_with("state_net")));
    assert_eq!(r.root.get("epoch"), Some(&Value::Int(7)));
    // The shared tensor is carried once, both places pointing at it, named by its first path.
    let (Some(Value::Tensor(a)), Some(Value::Tensor(b))) =
        (r.root.get_path("ema.a"), r.root.get_path("ema.b"))
    else {
        panic!("ema: {:?}", r.root.get("ema"));
    };
    assert_eq!(a, b);
    assert_eq!(r.tensors[*a].path, "ema.a");
    assert_eq!(back(&r.tensor_bytes(*a).unwrap()), [1.0, 2.0, 3.0]);
}

#[test]
fn the_dry_run_refuses_what_the_executor_would() {
    let dir = tempfile::tempdir().unwrap();
    let src = synthetic(dir.path());
    let opts = ConvertOptions {
        to: VersionId::V5_11,
        format: OutputFormat::Pt,
        force: false,
        dry_run: true,
        refine: None,
    };
    // A transpose order that is no permutation, and a slice bound below zero.
    let bad_perm = [
        SPEC_EDITS[0],
        (
            SPEC_EDITS[1].0,
            &*SPEC_EDITS[1].1.replace("perm: [1, 0]", "perm: [0, 0]"),
        ),
    ];
    let bad_bound = [
        (
            SPEC_EDITS[0].0,
            &*SPEC_EDITS[0]
                .1
                .replace("[[0, 64], [2, 18]]", "[[0, 64], [L - 20, 18]]"),
        ),
        SPEC_EDITS[1],
    ];
    for (name, edits, words) in [
        ("perm", &bad_perm[..], "not a permutation"),
        ("bound", &bad_bound[..], "bound -4 is negative"),
    ] {
        let sub = dir.path().join(name);
        std::fs::create_dir(&sub).unwrap();
        let specs = specs_with(&sub, edits);
        let out = sub.join("out.pt");
        let e = migrate::convert_file(&src, &out, &specs, &opts)
            .err()
            .unwrap_or_else(|| panic!("{name}: the dry run accepted the spec"))
            .to_string();
        assert!(e.contains(words), "{name}: {e}");
        assert!(!out.exists());
    }
}
