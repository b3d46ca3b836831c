//! The checkpoint reader against real files: every fixture in `checkpoints/` checked
//! against a dump made by a restricted Python unpickler (`fixtures/fixtures-dump.txt`:
//! every tensor's path and shape, every scalar's repr), the hostile files, and a
//! no-panic sweep over truncated and mutated inputs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tvck::format::{detect_and_parse, Checkpoint, DType, Finding, Format, FormatError, Value};

const DUMP: &str = include_str!("../fixtures/fixtures-dump.txt");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn open(rel: &str) -> Checkpoint {
    Checkpoint::open(root().join("checkpoints").join(rel)).unwrap_or_else(|e| panic!("{e}"))
}

// ----- the Python-side dump ------------------------------------------------------

#[derive(Default, Debug)]
struct Section {
    file: String,
    /// (path segments, shape)
    tensors: Vec<(Vec<String>, Vec<u64>)>,
    /// (path segments, Python repr)
    scalars: Vec<(Vec<String>, String)>,
}

fn parse_dump() -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    for line in DUMP.lines() {
        if let Some(file) = line.strip_prefix("===== ") {
            out.push(Section {
                file: file.trim().to_string(),
                ..Section::default()
            });
            stack.clear();
            continue;
        }
        let Some(sec) = out.last_mut() else { continue };
        let text = line.trim_start();
        if text.is_empty() {
            continue;
        }
        let indent = (line.len() - text.len()) / 2;
        stack.truncate(indent);
        let with = |k: &str| {
            let mut p = stack.clone();
            p.push(k.to_string());
            p
        };
        if let Some((k, rest)) = text.split_once(": [") {
            let dims = rest.strip_suffix(']').expect("shape");
            let shape = dims
                .split(", ")
                .filter(|d| !d.is_empty())
                .map(|d| d.parse().expect("dim"))
                .collect();
            sec.tensors.push((with(k), shape));
        } else if let Some(k) = text.strip_suffix(':') {
            let k = k
                .strip_prefix('[')
                .and_then(|k| k.strip_suffix(']'))
                .unwrap_or(k);
            stack.push(k.to_string());
        } else if let Some((k, v)) = text.split_once(" = ") {
            sec.scalars.push((with(k), v.to_string()));
        } else if text.ends_with(']') || text.ends_with(')') {
            // A literal under its key (cut-off long lines are skipped).
            sec.scalars.push((stack.clone(), text.to_string()));
        }
    }
    out
}

fn segment(k: &Value) -> String {
    match k {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => py_repr(other),
    }
}

fn lookup<'a>(v: &'a Value, segs: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for s in segs {
        cur = match cur {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| segment(k) == *s)
                .map(|(_, v)| v)?,
            Value::List(items) | Value::Tuple(items) => items.get(s.parse::<usize>().ok()?)?,
            Value::Object { .. } => cur.get(s)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    let s = format!("{f:?}");
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ("-", d),
                None => ("+", e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// Python's repr of a decoded value (as the dump prints it).
fn py_repr(v: &Value) -> String {
    let join = |items: &[Value]| items.iter().map(py_repr).collect::<Vec<_>>().join(", ");
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(s) => s.clone(),
        Value::Float(f) => py_float(*f),
        Value::Str(s) => format!("'{s}'"),
        Value::List(items) => format!("[{}]", join(items)),
        Value::Tuple(items) if items.len() == 1 => format!("({},)", py_repr(&items[0])),
        Value::Tuple(items) => format!("({})", join(items)),
        Value::Dict(items) => format!(
            "{{{}}}",
            items
                .iter()
                .map(|(k, v)| format!("{}: {}", py_repr(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::NumpyScalar { dtype, value } => format!("('np', '{dtype}', {})", py_repr(value)),
        other => format!("<{}>", other.kind()),
    }
}

#[test]
fn every_fixture_matches_the_python_dump() {
    let sections = parse_dump();
    assert_eq!(sections.len(), 7);
    let n_tensors: usize = sections.iter().map(|s| s.tensors.len()).sum();
    let n_scalars: usize = sections.iter().map(|s| s.scalars.len()).sum();
    assert_eq!((n_tensors, n_scalars), (493, 101));
    for sec in &sections {
        let c = open(&sec.file);
        assert!(c.findings.is_empty(), "{}: {:?}", sec.file, c.findings);
        assert!(!c.big_endian);
        assert_eq!(
            c.tensors.len(),
            sec.tensors.len(),
            "{}: tensor count",
            sec.file
        );
        for (segs, shape) in &sec.tensors {
            let path = segs.join(".");
            let t = c
                .tensors
                .iter()
                .find(|t| t.path == path)
                .unwrap_or_else(|| panic!("{}: no tensor `{path}`", sec.file));
            assert_eq!(&t.shape, shape, "{}: {path}", sec.file);
            assert_eq!(t.dtype, DType::F32, "{}: {path}", sec.file);
            assert!(t.is_contiguous());
            // and it is in the tree where the dump says
            assert!(
                matches!(lookup(&c.root, segs), Some(Value::Tensor(_))),
                "{}: {path}",
                sec.file
            );
        }
        assert!(!sec.scalars.is_empty() || sec.file.contains("state_dict"));
        for (segs, want) in &sec.scalars {
            let got = lookup(&c.root, segs)
                .unwrap_or_else(|| panic!("{}: no value at {segs:?}", sec.file));
            assert_eq!(&py_repr(got), want, "{}: {segs:?}", sec.file);
        }
        // every tensor's bytes are in the file, exactly numel × 4 of them
        for (i, t) in c.tensors.iter().enumerate() {
            let b = c
                .tensor_bytes(i)
                .unwrap_or_else(|e| panic!("{}: {e}", sec.file));
            assert_eq!(b.len() as u64, t.nbytes());
        }
    }
}

#[test]
fn model_state_roots_and_metadata() {
    let cases = [
        ("v5_5/latest.pt", Some("model"), 50, Some(59)),
        ("v5_5_early/latest.pt", Some("model"), 50, Some(1)),
        ("v5_11/best.pt", Some("model_state"), 37, Some(99)),
        (
            "v5_11_homeostasis/best.pt",
            Some("model_state"),
            56,
            Some(148),
        ),
        ("v5_12_4/best_Q.pt", Some("model_state_dict"), 84, Some(42)),
        ("exports/v5_12_4_state_dict.pt", None, 84, None),
        (
            "exports/v5_12_4_legacy.pt",
            Some("model_state_dict"),
            84,
            Some(42),
        ),
    ];
    for (file, key, n, epoch) in cases {
        let c = open(file);
        let ms = c
            .model_state()
            .unwrap_or_else(|| panic!("{file}: no model state"));
        assert_eq!(ms.root_key.as_deref(), key, "{file}");
        assert_eq!(ms.entries.len(), n, "{file}");
        assert_eq!(c.root.get("epoch").and_then(Value::as_i64), epoch, "{file}");
        let expect_format = if file.contains("legacy") {
            Format::TorchLegacy
        } else {
            Format::TorchZip
        };
        assert_eq!(c.format, expect_format, "{file}");
        assert!(c.parameter_count() > 0);
    }
    let c = open("v5_5/latest.pt");
    assert_eq!(c.tensors.len(), 98);
    let t = c
        .tensors
        .iter()
        .find(|t| t.path == "optimizer.state.0.exp_avg")
        .unwrap();
    assert_eq!(t.shape, [256, 9]);
    assert_eq!(
        c.root.get_path("config.model.name").and_then(Value::as_str),
        Some("DualNeuralVAEV5")
    );

    let c = open("v5_11_homeostasis/best.pt");
    let r = c.root.get_path("metrics.radial_corr_B").unwrap();
    assert!(matches!(r, Value::NumpyScalar { dtype, .. } if dtype == "f8"));
    assert_eq!(r.as_f64(), Some(-0.8318));
    assert_eq!(
        c.root
            .get_path("homeostasis_state.encoder_A_frozen")
            .and_then(Value::as_bool),
        Some(true)
    );

    let c = open("v5_11/best.pt");
    let m = c.root.get_path("metrics.mean_radius").unwrap();
    assert!(matches!(m, Value::NumpyScalar { dtype, .. } if dtype == "f4"));
    assert_eq!(m.as_f64(), Some(f64::from(0.47f32)));
    assert_eq!(
        c.root.get_path("config.model.name").and_then(Value::as_str),
        Some("TernaryVAEV5_11")
    );

    let c = open("v5_12_4/best_Q.pt");
    assert_eq!(
        c.root.get_path("metrics.Q").and_then(Value::as_f64),
        Some(1.071)
    );
    assert_eq!(
        c.root
            .get_path("config.model.encoder_type")
            .and_then(Value::as_str),
        Some("improved")
    );
    let t = c
        .tensors
        .iter()
        .find(|t| t.path == "model_state_dict.projection.proj_A.direction_net.4.weight")
        .unwrap();
    assert_eq!(t.shape, [64, 64]);
}

/// The legacy export, the bare state-dict export and best_Q.pt's model_state_dict
/// hold the same weights: same names, shapes and logical bytes.
#[test]
fn legacy_export_equals_the_state_dict_export() {
    let legacy = open("exports/v5_12_4_legacy.pt");
    let bare = open("exports/v5_12_4_state_dict.pt");
    let best = open("v5_12_4/best_Q.pt");
    let (l, b, q) = (
        legacy.model_state().unwrap(),
        bare.model_state().unwrap(),
        best.model_state().unwrap(),
    );
    assert_eq!(l.entries.len(), 84);
    for (((ln, li), (bn, bi)), (qn, qi)) in l.entries.iter().zip(&b.entries).zip(&q.entries) {
        assert_eq!((ln, ln), (bn, qn));
        let (lt, bt) = (&legacy.tensors[*li], &bare.tensors[*bi]);
        assert_eq!(lt.shape, bt.shape, "{ln}");
        assert_eq!(lt.dtype, bt.dtype, "{ln}");
        let lb = legacy.tensor_bytes(*li).unwrap();
        assert_eq!(lb, bare.tensor_bytes(*bi).unwrap(), "{ln}");
        assert_eq!(lb, best.tensor_bytes(*qi).unwrap(), "{ln}");
    }
    // The legacy file keeps its own storage keys and lays storages out in key-list order.
    assert!(legacy.storages.iter().all(|s| s.key.len() > 4));
}

// ----- hostile files -------------------------------------------------------------

fn pwned_files() -> Vec<PathBuf> {
    [
        PathBuf::from("tvck-pwned.txt"),
        root().join("tvck-pwned.txt"),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .collect()
}

#[test]
fn hostile_files_are_reported_not_run() {
    let dir = root().join("tests/fixtures/hostile");
    for (name, global) in [
        ("os_system.pt", "posix.system"),
        ("builtins_eval.pt", "builtins.eval"),
        ("legacy_os_system.pth", "os.system"),
    ] {
        let c = Checkpoint::open(dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.has_unsafe_globals(), "{name}");
        let unsafe_: Vec<&Finding> = c.findings.iter().filter(|f| f.is_unsafe()).collect();
        assert_eq!(unsafe_.len(), 1, "{name}: {:?}", c.findings);
        assert!(
            matches!(unsafe_[0], Finding::UnsafeGlobal { global: g, .. } if g == global),
            "{name}: {unsafe_:?}"
        );
        assert_eq!(
            c.root,
            Value::Blocked {
                global: global.into()
            },
            "{name}"
        );
        assert!(c.tensors.is_empty());
        let want = if name.ends_with(".pth") {
            Format::Pickle
        } else {
            Format::TorchZip
        };
        assert_eq!(c.format, want, "{name}");
    }
    let empty = Checkpoint::open(dir.join("empty.pt")).unwrap_err();
    assert!(matches!(empty.source, FormatError::Empty), "{empty}");
    let truncated = Checkpoint::open(dir.join("truncated.pt")).unwrap_err();
    assert!(
        matches!(truncated.source, FormatError::Truncated(_)),
        "{truncated}"
    );
    assert!(
        truncated.to_string().contains("zip cut short"),
        "{truncated}"
    );
    let text = Checkpoint::open(dir.join("not_a_checkpoint.pt")).unwrap_err();
    assert!(
        matches!(text.source, FormatError::NotACheckpoint(_)),
        "{text}"
    );
    assert!(
        pwned_files().is_empty(),
        "a payload ran: {:?}",
        pwned_files()
    );
}

// ----- no panics on any input ----------------------------------------------------

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn fixture_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [
        "checkpoints/v5_5",
        "checkpoints/v5_5_early",
        "checkpoints/v5_11",
        "checkpoints/v5_11_homeostasis",
        "checkpoints/v5_12_4",
        "checkpoints/exports",
        "tests/fixtures/hostile",
        "tests/fixtures/pickles",
        "tests/fixtures/zip",
    ] {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.extension().is_some_and(|e| e == "py" || e == "json"))
            .collect();
        entries.sort();
        files.extend(entries);
    }
    files
}

/// Parse, then touch everything a caller might (model state, every tensor's bytes).
fn exercise(bytes: &[u8]) {
    let Ok((_, _parsed)) = detect_and_parse(bytes) else {
        return;
    };
    let Ok(c) = Checkpoint::from_bytes("fuzz", bytes.to_vec()) else {
        return;
    };
    let _ = c.model_state();
    let _ = c.parameter_count();
    for (i, t) in c.tensors.iter().enumerate() {
        if t.nbytes() <= 1 << 24 {
            let _ = c.tensor_bytes(i);
        }
    }
}

#[test]
fn truncated_and_mutated_inputs_never_panic() {
    let start = Instant::now();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let files = fixture_files();
    assert!(files.len() > 50);
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let n = bytes.len();
        let big = n > 100_000;
        // truncations: evenly spread, plus the tail where the zip directory lives
        let cuts = if big { 48 } else { 16 };
        for k in 0..cuts {
            exercise(&bytes[..n * k / cuts]);
        }
        for back in (1..300).step_by(if big { 13 } else { 29 }) {
            exercise(&bytes[..n.saturating_sub(back)]);
        }
        // mutations: a few flipped bytes in the pickle/header region or the tail
        let rounds = if big { 60 } else { 12 };
        for _ in 0..rounds {
            let mut m = bytes.clone();
            for _ in 0..1 + rng.below(4) {
                if m.is_empty() {
                    break;
                }
                let at = match rng.below(3) {
                    0 => rng.below(m.len().min(20_000)),
                    1 => m.len() - 1 - rng.below(m.len().min(4_000)),
                    _ => rng.below(m.len()),
                };
                m[at] = match rng.below(4) {
                    0 => m[at] ^ (1 << rng.below(8)),
                    1 => 0xFF,
                    2 => 0,
                    _ => rng.next() as u8,
                };
            }
            exercise(&m);
        }
    }
    assert!(pwned_files().is_empty());
    eprintln!(
        "no-panic sweep over {} files took {:?}",
        files.len(),
        start.elapsed()
    );
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(42);
    for _ in 0..2_000 {
        let len = rng.below(200);
        let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // steer some inputs into each parser
        match rng.below(4) {
            0 if len > 0 => b[0] = 0x80,
            1 if len > 3 => b[..4].copy_from_slice(b"PK\x03\x04"),
            _ => {}
        }
        exercise(&b);
    }
}

#[test]
fn paths_are_relative_to_the_crate() {
    // cargo runs integration tests in the package root; the payload would land here.
    assert!(Path::new("Cargo.toml").exists());
}

// ----- torch's reading, resource limits, files scan must not skip -----------------

/// A zip of stored entries (`name`, bytes), the way `torch.save` lays it out.
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let crc = tvck::format::zip::crc32(data);
        let off = out.len() as u32;
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&off.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_off = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    let n = entries.len() as u16;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_off.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

const EXEC_P0: &[u8] = b"cbuiltins\nexec\n(Vprint(1)\ntR.";
const BENIGN: &[u8] = b"\x80\x02}q\x00.";

fn unsafe_labels(c: &Checkpoint) -> Vec<String> {
    c.findings
        .iter()
        .filter(|f| f.is_unsafe())
        .map(Finding::label)
        .collect()
}

#[test]
fn payloads_are_findings_whatever_else_fails() {
    // Protocol 0, deep nesting, a legacy header whose version pickle is the payload.
    let mut deep = b"\x80\x02".to_vec();
    deep.extend(std::iter::repeat_n(b']', 1000));
    deep.extend_from_slice(&EXEC_P0[..EXEC_P0.len() - 1]);
    deep.extend(std::iter::repeat_n(b'a', 1000));
    deep.push(b'.');
    let mut legacy = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.".to_vec();
    legacy.extend_from_slice(EXEC_P0);
    legacy.extend_from_slice(b"garbage");
    for (name, bytes) in [
        ("p0.pt", EXEC_P0.to_vec()),
        ("deep.pt", deep),
        ("legacy.pt", legacy),
    ] {
        let c = Checkpoint::from_bytes(name, bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(c.has_unsafe_globals(), "{name}: {:?}", c.findings);
        assert!(
            unsafe_labels(&c).contains(&"builtins.exec".to_string()),
            "{name}"
        );
        for f in &c.findings {
            assert!(
                !f.message().contains("Blocked"),
                "debug text: {}",
                f.message()
            );
        }
    }
}

#[test]
fn zip_differentials_follow_torch() {
    // Only an upper-case DATA.PKL: torch loads it.
    let upper = zip_of(&[("archive/DATA.PKL", EXEC_P0), ("archive/version", b"3\n")]);
    let c = Checkpoint::from_bytes("u.pt", upper).unwrap();
    let labels = unsafe_labels(&c);
    assert!(labels.contains(&"builtins.exec".to_string()), "{labels:?}");
    assert!(
        labels.iter().any(|l| l.contains("case-insensitive")),
        "{labels:?}"
    );
    // A benign data.pkl and a payload that differs in case only: ambiguous.
    let both = zip_of(&[
        ("archive/data.pkl", BENIGN),
        ("archive/DATA.PKL", EXEC_P0),
        ("archive/version", b"3\n"),
    ]);
    let c = Checkpoint::from_bytes("b.pt", both).unwrap();
    assert!(unsafe_labels(&c)
        .iter()
        .any(|l| l.contains("differ only in case")));
    // A second directory in the comment: miniz takes the last end record.
    let outer = zip_of(&[("archive/data.pkl", BENIGN)]);
    let mut inner = zip_of(&[("archive/data.pkl", EXEC_P0)]);
    let base = outer.len() as u32;
    let e = inner.len() - 22;
    let cd = u32::from_le_bytes(inner[e + 16..e + 20].try_into().unwrap());
    let lho_at = cd as usize + 42;
    let lho = u32::from_le_bytes(inner[lho_at..lho_at + 4].try_into().unwrap());
    inner[lho_at..lho_at + 4].copy_from_slice(&(lho + base).to_le_bytes());
    inner[e + 16..e + 20].copy_from_slice(&(cd + base).to_le_bytes());
    inner.extend_from_slice(b"JUNK");
    let mut two = outer.clone();
    let n = two.len();
    two[n - 2..].copy_from_slice(&(inner.len() as u16).to_le_bytes());
    two.extend_from_slice(&inner);
    let c = Checkpoint::from_bytes("two.pt", two).unwrap();
    let labels = unsafe_labels(&c);
    assert!(
        labels
            .iter()
            .any(|l| l.contains("end-of-central-directory")),
        "{labels:?}"
    );
    assert!(labels.contains(&"builtins.exec".to_string()), "{labels:?}");
    // TorchScript: constants.pkl beside a benign data.pkl.
    let ts = zip_of(&[
        ("archive/data.pkl", BENIGN),
        ("archive/constants.pkl", BENIGN),
        ("archive/code/__torch__.py", b"def f(): pass\n"),
    ]);
    let c = Checkpoint::from_bytes("ts.pt", ts).unwrap();
    let ts_msgs: Vec<String> = c
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::TorchScript { .. }))
        .map(Finding::message)
        .collect();
    assert_eq!(ts_msgs.len(), 1, "{:?}", c.findings);
    assert!(
        ts_msgs[0].contains("archive/code/__torch__.py"),
        "{ts_msgs:?}"
    );
    // The sample checkpoints have none of this.
    for f in [
        "v5_11/best.pt",
        "exports/v5_12_4_legacy.pt",
        "exports/v5_12_4.safetensors",
    ] {
        assert!(!open(f).has_unsafe_globals(), "{f}");
    }
}

#[test]
fn legacy_tar_checkpoints_are_read() {
    // Written by tests/python/make_legacy_tar.py, checked against torch.load there.
    let dir = root().join("tests/fixtures/legacy");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let expected = manifest["legacy_tar.pt"]["tensors"].as_object().unwrap();
    let c = Checkpoint::open(dir.join("legacy_tar.pt")).unwrap();
    assert_eq!(c.format, Format::TorchLegacyTar);
    assert!(!c.has_unsafe_globals(), "{:?}", c.findings);
    let ms = c.model_state().unwrap();
    assert_eq!(ms.entries.len(), expected.len());
    let hashes: Vec<String> = (0..c.tensors.len())
        .map(|i| tvck::fingerprint::hex(&tvck::fingerprint::tensor_hash(&c, i).unwrap()))
        .collect();
    for (key, i) in &ms.entries {
        let name = format!("model_state_dict.{key}");
        assert_eq!(expected[&name], hashes[*i].as_str(), "{name}");
    }
    let t = |k: &str| &c.tensors[ms.entries.iter().find(|e| e.0 == k).unwrap().1];
    assert_eq!(t("encoder.weight_t").strides, vec![1, 4]);
    assert_eq!(t("encoder.weight").storage, t("encoder.weight_t").storage);
    assert_eq!(t("encoder.bias").storage_offset, 6);
    assert_eq!(t("proj.weight").dtype, DType::F64);
    assert_eq!(t("view.weight").shape, vec![2, 3]);
    // Every prefix and damaged copy: an error or a reading, never a panic.
    let bytes = std::fs::read(dir.join("legacy_tar.pt")).unwrap();
    for cut in (0..bytes.len()).step_by(97) {
        let _ = Checkpoint::from_bytes("cut.pt", bytes[..cut].to_vec());
    }
    for at in (0..bytes.len()).step_by(53) {
        let mut b = bytes.clone();
        b[at] ^= 0x5a;
        if let Ok(c) = Checkpoint::from_bytes("damaged.pt", b) {
            for i in 0..c.tensors.len() {
                let _ = c.tensor_bytes(i);
            }
        }
    }
}

/// `src` (a torch.save zip) rewritten with its `data/N` entries deflated, each declaring
/// `declare(name, real size)` inflated bytes.
fn deflated_copy(src: &[u8], declare: impl Fn(&str, u32) -> u32) -> Vec<u8> {
    use std::io::Write;
    let z = tvck::format::zip::ZipArchive::parse(src).unwrap();
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in z.entries() {
        let data = z.read(e, u64::MAX).unwrap();
        let deflate = e.name.contains("/data/");
        let payload = if deflate {
            let mut enc =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(&data).unwrap();
            enc.finish().unwrap()
        } else {
            data.to_vec()
        };
        let method: u16 = if deflate { 8 } else { 0 };
        let usize_ = if deflate {
            declare(&e.name, data.len() as u32)
        } else {
            data.len() as u32
        };
        let crc = tvck::format::zip::crc32(&data);
        let off = out.len() as u32;
        let fields = |v: &mut Vec<u8>| {
            v.extend_from_slice(&method.to_le_bytes());
            v.extend_from_slice(&[0; 4]);
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            v.extend_from_slice(&usize_.to_le_bytes());
            v.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0]);
        fields(&mut out);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(e.name.as_bytes());
        out.extend_from_slice(&payload);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0]);
        fields(&mut central);
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&off.to_le_bytes());
        central.extend_from_slice(e.name.as_bytes());
    }
    let cd_off = out.len() as u32;
    let n = z.entries().len() as u16;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_off.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

#[test]
fn deflated_storages_are_inflated_lazily_within_the_limits() {
    use tvck::format::{limits, InflateLimit, StorageData};
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read(root().join("checkpoints/v5_11/best.pt")).unwrap();
    let original = open("v5_11/best.pt");
    // Read lazily from a file: nothing is inflated when it is opened, and every tensor
    // reads (inflated from the file) as the stored original does.
    let path = dir.path().join("deflated.pt");
    std::fs::write(&path, deflated_copy(&src, |_, n| n)).unwrap();
    let c = Checkpoint::open(&path).unwrap();
    assert!(c
        .storages
        .iter()
        .all(|s| matches!(s.data, StorageData::Deflated { .. })));
    assert_eq!(c.tensors, original.tensors);
    for i in 0..c.tensors.len() {
        assert!(!c.storage_in_memory(c.tensors[i].storage));
        assert_eq!(
            c.tensor_bytes(i).unwrap(),
            original.tensor_bytes(i).unwrap()
        );
    }
    assert_eq!(
        tvck::fingerprint::fingerprint(&c).unwrap(),
        tvck::fingerprint::fingerprint(&original).unwrap()
    );
    // One entry declaring more than MAX_INFLATED_ENTRY: the file is refused when opened,
    // by a typed error naming the file, the entry, the limit and the size.
    let bomb = dir.path().join("bomb.pt");
    std::fs::write(
        &bomb,
        deflated_copy(&src, |name, n| {
            if name.ends_with("/data/0") {
                3 << 30
            } else {
                n
            }
        }),
    )
    .unwrap();
    let e = Checkpoint::open(&bomb).unwrap_err();
    match &e.source {
        FormatError::Inflate {
            file,
            entry,
            limit,
            found,
        } => {
            assert!(file.ends_with("bomb.pt"), "{file}");
            assert!(entry.ends_with("/data/0"), "{entry}");
            assert_eq!(*limit, InflateLimit::Entry);
            assert_eq!(*found, 3 << 30);
        }
        other => panic!("{other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("bomb.pt")
            && msg.contains("MAX_INFLATED_ENTRY")
            && msg.contains(&limits::MAX_INFLATED_ENTRY.to_string())
            && msg.contains("3221225472"),
        "{msg}"
    );
    assert_eq!(
        msg.matches("bomb.pt").count(),
        1,
        "the file is named once: {msg}"
    );
    assert!(e.source.hint().is_some());
    // Entries each within the entry limit that together pass MAX_INFLATED_PER_FILE.
    let each = (limits::MAX_INFLATED_ENTRY - 1) as u32;
    let many = dir.path().join("many.pt");
    std::fs::write(&many, deflated_copy(&src, |_, _| each)).unwrap();
    match Checkpoint::open(&many).unwrap_err().source {
        FormatError::Inflate { limit, found, .. } => {
            assert_eq!(limit, InflateLimit::File);
            assert!(found > limits::MAX_INFLATED_PER_FILE);
        }
        other => panic!("{other}"),
    }
    // An entry that inflates to more than it declares stops there, with an error.
    let liar = dir.path().join("liar.pt");
    std::fs::write(&liar, deflated_copy(&src, |_, n| n / 2)).unwrap();
    let c = Checkpoint::open(&liar).unwrap();
    let e = c.tensor_bytes(0).unwrap_err().to_string();
    assert!(e.contains("inflates to more than"), "{e}");
}

#[cfg(unix)]
#[test]
fn fifos_are_refused_without_blocking_and_scan_follows_links() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.pt");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo");
    let start = Instant::now();
    let e = Checkpoint::open(&fifo).unwrap_err().to_string();
    assert!(e.contains("FIFO"), "{e}");
    assert!(start.elapsed().as_secs() < 5);
    // A linked checkpoint, a linked folder, a loop, an explicit odd extension.
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::write(real.join("x.weights"), EXEC_P0).unwrap();
    std::fs::copy(
        root().join("checkpoints/v5_11/best.pt"),
        real.join("best.pt"),
    )
    .unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::os::unix::fs::symlink(real.join("best.pt"), tree.join("link.pt")).unwrap();
    std::os::unix::fs::symlink(&real, tree.join("folder")).unwrap();
    std::os::unix::fs::symlink(&tree, tree.join("loop")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("nothing.pt"), tree.join("broken.pt")).unwrap();
    let tvck::discover::Discovered {
        files,
        errors,
        skipped,
    } = tvck::discover::discover(&tree, tvck::discover::Walk::everything());
    let names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(&tree).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        vec!["folder/best.pt", "link.pt"],
        "{errors:?} {skipped:?}"
    );
    let reasons: Vec<String> = skipped
        .iter()
        .map(|s| format!("{}: {}", s.path, s.reason))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("loop:") && r.contains("loop")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("broken.pt:") && r.contains("broken")),
        "{reasons:?}"
    );
    // A file named explicitly is scanned whatever its extension.
    let files =
        tvck::discover::discover(&real.join("x.weights"), tvck::discover::Walk::everything()).files;
    assert_eq!(files.len(), 1);
    let skipped = tvck::discover::discover(&fifo, tvck::discover::Walk::everything()).skipped;
    assert!(skipped[0].reason.contains("FIFO"), "{skipped:?}");
}
