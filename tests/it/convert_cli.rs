//! `tvck convert`: dry-run plans (snapshots), real conversions read back, refusals, spec
//! violations, hostile inputs, folder conversion, and (`#[ignore]`d, run by scripts/test)
//! the proof against real PyTorch: tests/python/check_converted.py.

use crate::common;

use std::path::{Path, PathBuf};

use common::{python, root, stdout, tvck};
use serde_json::Value as Json;
use tvck::format::{Checkpoint, Value};

/// Every sample checkpoint (repo-relative).
const SAMPLES: [&str; 7] = [
    "checkpoints/v5_11/best.pt",
    "checkpoints/v5_11_homeostasis/best.pt",
    "checkpoints/v5_5/latest.pt",
    "checkpoints/v5_5_early/latest.pt",
    "checkpoints/v5_12_4/best_Q.pt",
    "checkpoints/exports/v5_12_4.safetensors",
    "checkpoints/exports/v5_12_4_state_dict.pt",
];

/// The samples that need converting to v5.12.4.
const OLD: [&str; 4] = [
    "checkpoints/v5_11/best.pt",
    "checkpoints/v5_11_homeostasis/best.pt",
    "checkpoints/v5_5/latest.pt",
    "checkpoints/v5_5_early/latest.pt",
];

fn snap_name(path: &str) -> String {
    path.trim_start_matches("checkpoints/")
        .replace(['/', '.'], "_")
}

fn run(args: &[&str]) -> std::process::Output {
    tvck(args, &root())
}

/// The `--dry-run --json` plan of converting `src` to `to` (the run must succeed).
fn dry_run_plan(src: &Path, to: &str, what: &str) -> Json {
    let o = run(&[
        "convert",
        src.to_str().unwrap(),
        "--to",
        to,
        "--dry-run",
        "--json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    json_of(&o)["plan"].clone()
}

fn json_of(o: &std::process::Output) -> Json {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            stdout(o),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn count_numpy(v: &Value) -> usize {
    match v {
        Value::NumpyScalar { .. } => 1,
        Value::List(items) | Value::Tuple(items) => items.iter().map(count_numpy).sum(),
        Value::Dict(items) => items.iter().map(|(_, v)| count_numpy(v)).sum(),
        _ => 0,
    }
}

fn sha(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn dry_run_plans_of_every_sample() {
    for s in SAMPLES {
        let o = run(&["convert", s, "--to", "v5_12_4", "--dry-run"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{s}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        snap_run!(format!("convert_dry_run_{}", snap_name(s)), o);
        // Nothing written next to the input.
        let would = root().join(s).with_file_name(format!(
            "{}.v5_12_4.pt",
            Path::new(s).file_stem().unwrap().to_string_lossy()
        ));
        assert!(!would.exists(), "dry run wrote {}", would.display());
    }
    let o = run(&[
        "convert",
        "checkpoints/v5_5/latest.pt",
        "--to",
        "v5_11",
        "--dry-run",
    ]);
    assert_eq!(o.status.code(), Some(0));
    snap_run!("convert_dry_run_v5_5_to_v5_11", o);
}

#[test]
fn dry_run_json_is_stable() {
    let o = run(&[
        "convert",
        "checkpoints/v5_11_homeostasis/best.pt",
        "--to",
        "v5_12_4",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    snap_run!("convert_dry_run_json_v5_11_homeostasis", o);
}

#[test]
fn the_dry_run_plan_is_the_plan_a_real_run_executes() {
    let dir = tempfile::tempdir().unwrap();
    for (i, s) in OLD.iter().enumerate() {
        let dry = json_of(&run(&[
            "convert",
            s,
            "--to",
            "v5_12_4",
            "--dry-run",
            "--json",
        ]));
        let out = dir.path().join(format!("{i}.pt"));
        let real = run(&[
            "convert",
            s,
            "--to",
            "v5_12_4",
            "-o",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(
            real.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&real.stderr)
        );
        let real = json_of(&real);
        assert_eq!(dry["plan"], real["plan"], "{s}");
        assert!(dry.get("output").is_none());
        assert_eq!(real["output"], Json::from(out.to_str().unwrap()));
        assert_eq!(
            real["verified"].as_u64().unwrap() as usize,
            real["plan"]["steps"].as_array().unwrap().last().unwrap()["rows"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r.get("to").is_some())
                .count()
        );
    }
}

/// Convert `src` into `out` and return `tvck inspect --json` of the result.
fn convert_and_inspect(src: &str, out: &Path) -> Json {
    let o = run(&[
        "convert",
        src,
        "--to",
        "v5_12_4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout(&o).contains("verified 84 tensors"), "{}", stdout(&o));
    let i = run(&["inspect", out.to_str().unwrap(), "--json"]);
    assert_eq!(
        i.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&i.stderr)
    );
    json_of(&i)
}

#[test]
fn converted_files_keep_the_checkpoint_shape() {
    let dir = tempfile::tempdir().unwrap();
    for ext in ["pt", "safetensors"] {
        let out = dir.path().join(format!("best.{ext}"));
        let j = convert_and_inspect("checkpoints/v5_11_homeostasis/best.pt", &out);
        assert_eq!(j["version"]["version"], "v5_12_4", "{ext}");
        assert_eq!(j["version"]["confidence"], 1.0, "{ext}");
        assert_eq!(
            j["model_state_key"], "model_state",
            "{ext}: model state moved"
        );
        // The tree: epoch, config rewritten, homeostasis kept, optimizer dropped, a
        // migration record holding the source's metrics (numpy → float): the file has no
        // `metrics` of its own, and says they were not measured.
        let c = Checkpoint::open(&out).unwrap();
        let get = |p: &str| c.root.get_path(p).cloned().unwrap_or(Value::None);
        assert_eq!(get("epoch"), Value::Int(148), "{ext}");
        assert_eq!(
            get("metrics"),
            Value::None,
            "{ext}: source metrics inherited"
        );
        assert_eq!(
            get("migration.source_metrics.metrics.radial_corr_B"),
            Value::Float(-0.8318),
            "{ext}"
        );
        assert_eq!(
            get("migration.metrics.status"),
            Value::Str("not_measured".into()),
            "{ext}"
        );
        assert_eq!(j["metrics"]["provenance"], "not_measured", "{ext}");
        assert!(
            j["metrics"].get("coverage").is_none(),
            "{ext}: {}",
            j["metrics"]
        );
        assert_eq!(count_numpy(&c.root), 0, "{ext}");
        assert_eq!(
            get("config.model.name"),
            Value::Str("TernaryVAEV5_11_PartialFreeze".into())
        );
        assert_eq!(get("config.model.projection_layers"), Value::Int(2));
        assert_eq!(
            get("config.model.encoder_type"),
            Value::Str("improved".into())
        );
        assert_eq!(get("homeostasis_state.encoder_A_frozen"), Value::Bool(true));
        assert_eq!(
            get("migration.from_version"),
            Value::Str("v5_11_partial_freeze".into())
        );
        assert_eq!(get("migration.to_version"), Value::Str("v5_12_4".into()));
        let specs = get("migration.specs");
        let Value::List(specs) = specs else {
            panic!("{specs:?}")
        };
        assert_eq!(
            specs[0].get("name"),
            Some(&Value::Str("v5_11_to_v5_12_4".into()))
        );
        let spec_sha = tvck::migrate::SpecSet::embedded().unwrap().specs[1]
            .sha256
            .clone();
        assert_eq!(specs[0].get("sha256"), Some(&Value::Str(spec_sha)));
        assert!(get("migration.tool").as_str().unwrap().starts_with("tvck "));
        assert!(get("migration.utc").as_str().unwrap().ends_with('Z'));
        assert_eq!(get("optimizer_state_dict"), Value::None);
        assert_eq!(get("model_state_dict"), Value::None);
    }
    // The same weights in both containers.
    let scan = json_of(&run(&[
        "scan",
        dir.path().to_str().unwrap(),
        "--hash",
        "--json",
    ]));
    let fps: Vec<&Json> = scan["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["fingerprint"])
        .collect();
    assert_eq!(fps.len(), 2);
    assert_eq!(fps[0], fps[1]);
}

#[test]
fn copied_tensors_keep_their_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.pt");
    let j = convert_and_inspect("checkpoints/v5_11/best.pt", &out);
    let src = json_of(&run(&["inspect", "checkpoints/v5_11/best.pt", "--json"]));
    let hash_of = |j: &Json, name: &str| -> String {
        j["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))["sha256"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (a, b) in [
        (
            "model_state.encoder_A.encoder.2.weight",
            "model_state.encoder_A.encoder.4.weight",
        ),
        (
            "model_state.decoder_A.decoder.4.bias",
            "model_state.decoder_A.decoder.8.bias",
        ),
        (
            "model_state.projection.direction_net.3.weight",
            "model_state.projection.proj_A.direction_net.8.weight",
        ),
        (
            "model_state.projection.direction_net.3.weight",
            "model_state.projection.proj_B.direction_net.8.weight",
        ),
        (
            "model_state.projection.manifold.isp_c",
            "model_state.projection.proj_B.manifold.isp_c",
        ),
    ] {
        assert_eq!(hash_of(&src, a), hash_of(&j, b), "{a} -> {b}");
    }
}

#[test]
fn outputs_are_never_clobbered() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.pt");
    std::fs::write(&out, b"precious").unwrap();
    let o = run(&[
        "convert",
        OLD[0],
        "--to",
        "v5_12_4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let o = run(&[
        "convert",
        OLD[0],
        "--to",
        "v5_12_4",
        "-o",
        out.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_ne!(std::fs::read(&out).unwrap(), b"precious");

    // The input, even with --force, even through another spelling of its path.
    let input = dir.path().join("in.pt");
    std::fs::copy(root().join(OLD[0]), &input).unwrap();
    let before = sha(&input);
    let other = dir.path().join(".").join("in.pt");
    let o = run(&[
        "convert",
        input.to_str().unwrap(),
        "--to",
        "v5_12_4",
        "-o",
        other.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is the input"));
    assert_eq!(sha(&input), before);
    // No temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}

#[test]
fn usage_errors() {
    let o = run(&["convert", OLD[0], "--to", "v9"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid value 'v9' for '--to <VERSION>'"));
    let o = run(&["convert", "checkpoints", "--to", "v5_12_4"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("name the output folder"));
    let o = run(&[
        "convert",
        "checkpoints/exports/v5_12_4.safetensors",
        "--to",
        "v5_5",
        "--dry-run",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no migration path from v5_12_4 to v5_5"));
}

/// A spec dir holding a broken copy of the embedded v5.11 → v5.12.4 spec.
fn broken_spec_dir(edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(root().join("migrations-specs/v5_11_to_v5_12_4.yaml")).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(dir.path().join("broken.yaml"), edited).unwrap();
    dir
}

#[test]
fn a_spec_that_does_not_fit_is_rejected_with_every_key_listed() {
    // Drop the decoder_A 4 -> 8 rule (leaves 2 source keys unmatched and 2 target keys
    // missing), make encoder.0 also produce encoder.4 (2 keys produced twice), and assert a
    // wrong shape for fc_mu.
    let specs = broken_spec_dir(|t| {
        t.replace(
            "  - op: rename\n    from: decoder_A.decoder.4\n    to: decoder_A.decoder.8\n    tensors: {weight: \"[27, 64] -> [27, 64]\", bias: \"[27] -> [27]\"}\n",
            "",
        )
        .replace(
            "    from: encoder_{X}.encoder.0\n    to: encoder_{X}.encoder.0\n",
            "    from: encoder_{X}.encoder.0\n    to: encoder_{X}.encoder.4\n",
        )
        .replace("tensors: {weight: \"[L, 64] -> [L, 64]\", bias: \"[L] -> [L]\"}\n  - op: copy\n    from: encoder_{X}.fc_logvar", "tensors: {weight: \"[L, 32] -> [L, 64]\", bias: \"[L] -> [L]\"}\n  - op: copy\n    from: encoder_{X}.fc_logvar")
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.pt");
    let o = run(&[
        "convert",
        OLD[0],
        "--to",
        "v5_12_4",
        "--specs",
        specs.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr).replace(specs.path().to_str().unwrap(), "<specs>");
    snap_run!(
        "convert_spec_violation",
        o,
        &[(specs.path().to_str().unwrap(), "<specs>")]
    );
    for k in [
        "decoder_A.decoder.4.weight [27, 64]",
        "decoder_A.decoder.4.bias [27]",
        "decoder_A.decoder.8.weight [27, 64]",
        "encoder_A.encoder.0.weight [256, 9]",
        "encoder_B.encoder.4.weight (rules 1, 2)",
        "encoder_A.fc_mu.weight",
    ] {
        assert!(err.contains(k), "{k} not listed:\n{err}");
    }
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// `tvck convert <v5.11 sample> --to v5_12_4 --dry-run --specs DIR`.
fn dry_run_with_specs(specs: &tempfile::TempDir) -> std::process::Output {
    run(&[
        "convert",
        OLD[0],
        "--to",
        "v5_12_4",
        "--dry-run",
        "--specs",
        specs.path().to_str().unwrap(),
    ])
}

#[test]
fn a_malformed_spec_is_named() {
    let specs = broken_spec_dir(|t| t.replace("op: rename", "op: rname"));
    let o = dry_run_with_specs(&specs);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("broken.yaml") && err.contains("rule 2: unknown op `rname`"),
        "{err}"
    );
}

#[test]
fn a_layout_the_spec_does_not_accept_is_refused() {
    // The shipped spec takes every v5.11 layout: restrict a copy to dual projections and
    // feed it a single one.
    let specs = broken_spec_dir(|t| {
        t.replace(
            "  version: v5_11          # every v5.11 / PartialFreeze layout of the catalog\n",
            "  version: v5_11\n  accepts:\n    dual_projection: [true]\n",
        )
    });
    let o = dry_run_with_specs(&specs);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("dual_projection is false, the spec accepts true"),
        "{err}"
    );
}

#[test]
fn hostile_files_are_refused_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "os_system.pt",
        "builtins_eval.pt",
        "legacy_os_system.pth",
        "truncated.pt",
        "empty.pt",
    ] {
        let src = root().join("tests/fixtures/hostile").join(f);
        let out = dir.path().join(format!("{f}.out.pt"));
        let o = tvck(
            &[
                "convert",
                src.to_str().unwrap(),
                "--to",
                "v5_12_4",
                "-o",
                out.to_str().unwrap(),
            ],
            dir.path(),
        );
        assert_eq!(o.status.code(), Some(1), "{f}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(f), "{f}: {err}");
        assert!(!out.exists());
    }
    assert!(!dir.path().join("tvck-pwned.txt").exists());
    let o = tvck(
        &[
            "convert",
            root()
                .join("tests/fixtures/hostile/os_system.pt")
                .to_str()
                .unwrap(),
            "--to",
            "v5_12_4",
            "--dry-run",
        ],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("unsafe pickle globals"));
}

#[test]
fn a_folder_converts_with_the_bad_file_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("runs");
    for s in SAMPLES {
        let rel = Path::new(s).strip_prefix("checkpoints").unwrap();
        let to = input.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root().join(s), &to).unwrap();
    }
    std::fs::create_dir_all(input.join("broken")).unwrap();
    std::fs::write(input.join("broken/bad.pt"), b"not a checkpoint at all").unwrap();
    let out = dir.path().join("converted");
    let o = tvck(
        &[
            "convert",
            "runs",
            "--recursive",
            "--to",
            "v5_12_4",
            "-o",
            "converted",
        ],
        dir.path(),
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    snap_run!("convert_recursive", o);
    for s in OLD {
        let rel = Path::new(s).strip_prefix("checkpoints").unwrap();
        assert!(out.join(rel).exists(), "{} missing", rel.display());
    }
    assert!(!out.join("broken/bad.pt").exists());
    assert!(
        !out.join("v5_12_4/best_Q.pt").exists(),
        "unchanged files are not copied"
    );
    // The whole output folder scans as v5.12.4.
    let scan = json_of(&tvck(&["scan", "converted", "--json"], dir.path()));
    let versions: Vec<&Json> = scan["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["version"]["version"])
        .collect();
    assert_eq!(versions.len(), 4);
    assert!(versions.iter().all(|v| *v == "v5_12_4"), "{versions:?}");
}

/// A v5.12 (v5.12.0–3: frozen-style encoders, dual 2-layer projection, controller)
/// checkpoint written with tvck's own writer, with distinct pseudo-random values: no shared
/// fixture has this layout.
fn write_v5_12(path: &Path) {
    use tvck::arch::{self, VersionId};
    let params = arch::default_params(VersionId::V5_12);
    write_layout(path, VersionId::V5_12, &params, "TernaryVAEV5_12");
}

/// A checkpoint holding the catalog's layout of `version` with `params` (pseudo-random
/// values), with a config naming `model_name`.
fn write_layout(
    path: &Path,
    version: tvck::arch::VersionId,
    params: &tvck::arch::LayoutParams,
    model_name: &str,
) {
    use tvck::arch;
    use tvck::format::write::{self, pt, TensorData};
    use tvck::format::DType;
    let layout = arch::expected_layout(version, params);
    let mut x: u32 = 12345;
    let mut tensors = Vec::new();
    let mut state = Vec::new();
    for (k, shape) in &layout {
        let n: u64 = shape.iter().product();
        let bytes: Vec<u8> = (0..n)
            .flat_map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5).to_le_bytes()
            })
            .collect();
        tensors.push(TensorData::new(DType::F32, shape.clone(), bytes));
        state.push((Value::Str(k.clone()), Value::Tensor(tensors.len() - 1)));
    }
    let s = |v: &str| Value::Str(v.into());
    let root = Value::Dict(vec![
        (s("epoch"), Value::Int(5)),
        (s("model_state_dict"), Value::Dict(state)),
        (
            s("config"),
            Value::Dict(vec![(
                s("model"),
                Value::Dict(vec![
                    (s("name"), s(model_name)),
                    (s("encoder_type"), s("frozen")),
                ]),
            )]),
        ),
    ]);
    write::write_atomic(path, false, |w| {
        pt::write_pt(&root, &tensors, &pt::PtOptions::default(), w)
    })
    .unwrap();
}

/// One spec covers the whole v5.11 family: every projection layout the catalog describes
/// (1..4 layers, dropout or not, single / dual / dual with a shared direction, controller
/// or not, several dims) plans a conversion to v5.12.4; the layouts a user may hold that
/// the old spec refused (2 layers without dropout, dual, with or without controller)
/// convert for real into a file inspect reads as v5.12.4.
#[test]
fn every_v5_11_family_layout_converts_to_v5_12_4() {
    use tvck::arch::{self, VersionId};
    let dir = tempfile::tempdir().unwrap();
    let dims = [(16, 64), (8, 32), (5, 100)];
    let mut n = 0;
    for layers in 1..=4u64 {
        for dropout in [false, true] {
            for (dual, share) in [(false, false), (true, false), (true, true)] {
                for controller in [false, true] {
                    let (latent, hidden) = dims[n % dims.len()];
                    n += 1;
                    let mut p = arch::default_params(VersionId::V5_11);
                    p.latent_dim = latent;
                    p.hidden_dim = hidden;
                    p.projection_layers = layers;
                    p.projection_dropout = dropout;
                    p.dual_projection = dual;
                    p.share_direction = share;
                    p.controller = controller;
                    let name = format!("l{layers}-d{dropout}-{dual}-{share}-c{controller}");
                    let src = dir.path().join(format!("{name}.pt"));
                    let class = if n % 2 == 0 {
                        "TernaryVAEV5_11"
                    } else {
                        "TernaryVAEV5_11_PartialFreeze"
                    };
                    write_layout(&src, VersionId::V5_11, &p, class);
                    let plan = &dry_run_plan(&src, "v5_12_4", &name);
                    assert_eq!(plan["target_version"], "v5_12_4", "{name}");
                    let source = plan["source_version"].as_str().unwrap();
                    assert!(source.starts_with("v5_11"), "{name}: {source}");
                    let step = &plan["steps"][0];
                    assert_eq!(step["spec"], "v5_11_to_v5_12_4", "{name}");
                    // Every source tensor is accounted for: kept, or dropped (blocks beyond
                    // the target's two layers only).
                    let s = &step["summary"];
                    let kept = s["copied"].as_u64().unwrap() - s["duplicated"].as_u64().unwrap();
                    let source_keys = arch::expected_layout(VersionId::V5_11, &p).len() as u64;
                    assert_eq!(kept + s["dropped"].as_u64().unwrap(), source_keys, "{name}");
                    let extra_blocks = layers.saturating_sub(2);
                    let per_block = if share {
                        6
                    } else if dual {
                        12
                    } else {
                        6
                    };
                    assert_eq!(s["dropped"], extra_blocks * per_block, "{name}: {s}");
                    let warned = plan["warnings"].as_array().unwrap().iter().any(|w| {
                        w.as_str()
                            .unwrap()
                            .contains("beyond the second are dropped")
                    });
                    assert_eq!(warned, layers > 2, "{name}");
                    if layers == 2 && !dropout && dual && !share {
                        let out = dir.path().join(format!("{name}.v5_12_4.pt"));
                        let j = convert_and_inspect(src.to_str().unwrap(), &out);
                        assert_eq!(j["version"]["version"], "v5_12_4", "{name}");
                        assert_eq!(j["version"]["confidence"], 1.0, "{name}");
                    }
                }
            }
        }
    }
}

/// The family property test with real PyTorch (tests/python/convert_family.py): layouts
/// across the catalog's ranges built by the PyTorch reference, converted, loaded strictly.
#[test]
#[ignore = "needs the PyTorch environment (scripts/test runs it)"]
fn pytorch_loads_every_family_layout_strictly() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(py)
        .arg(root().join("tests/python/convert_family.py"))
        .arg(env!("CARGO_BIN_EXE_tvck"))
        .arg(dir.path())
        .output()
        .expect("run python");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ok = out.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(ok >= 60, "{out}");
    for held_out in [
        "v5_11-2L-nodrop-dual-noctrl",
        "v5_11-2L-nodrop-dual-ctrl",
        "v5_11-2L-nodrop-single-noctrl",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("ok {held_out}"))),
            "{held_out} missing:\n{out}"
        );
    }
}

#[test]
fn a_v5_12_checkpoint_converts_through_its_own_spec() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("v5_12.pt");
    write_v5_12(&src);
    let plan = &dry_run_plan(&src, "v5_12_4", "v5_12");
    assert_eq!(plan["source_version"], "v5_12");
    assert_eq!(plan["steps"][0]["spec"], "v5_12_to_v5_12_4");
    assert_eq!(plan["steps"][0]["summary"]["initialised"], 16);
    let out = dir.path().join("out.pt");
    let j = convert_and_inspect(src.to_str().unwrap(), &out);
    assert_eq!(j["version"]["version"], "v5_12_4");
    assert_eq!(j["version"]["confidence"], 1.0);
}

/// Every conversion, checked by real PyTorch (tests/python/check_converted.py).
#[test]
#[ignore = "needs the Python environment with torch 2.13 (scripts/test sets it up)"]
fn pytorch_loads_every_conversion_strictly() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    let v5_12 = dir.path().join("v5_12.pt");
    write_v5_12(&v5_12);
    let v5_12 = v5_12.to_str().unwrap().to_string();
    let mut conversions: Vec<(&str, &str, &str)> = vec![(&v5_12, "v5_12_4", "pt")];
    for s in OLD {
        conversions.push((s, "v5_12_4", "pt"));
        conversions.push((s, "v5_12_4", "safetensors"));
    }
    conversions.push(("checkpoints/v5_5/latest.pt", "v5_11", "pt"));
    conversions.push(("checkpoints/v5_5_early/latest.pt", "v5_11", "safetensors"));
    for (i, (s, to, fmt)) in conversions.iter().enumerate() {
        let out: PathBuf = dir.path().join(format!("{i}.{fmt}"));
        let o = run(&[
            "convert",
            s,
            "--to",
            to,
            "-o",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{s}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        cases.push(serde_json::json!({
            "source": root().join(s),
            "output": out,
            "plan": json_of(&o)["plan"],
        }));
    }
    let cases_file = dir.path().join("cases.json");
    std::fs::write(&cases_file, serde_json::to_string(&cases).unwrap()).unwrap();
    let o = std::process::Command::new(py)
        .arg(root().join("tests/python/check_converted.py"))
        .arg(&cases_file)
        .output()
        .expect("run python");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        conversions.len(),
        "{out}"
    );
}

/// OUT as a hard link to the input, or as a symbolic link, is refused even with --force:
/// the input stays byte for byte what it was.
#[cfg(unix)]
#[test]
fn links_as_output_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pt");
    std::fs::copy("checkpoints/v5_11/best.pt", &input).unwrap();
    let before = std::fs::read(&input).unwrap();
    let hard = dir.path().join("hard.pt");
    std::fs::hard_link(&input, &hard).unwrap();
    let soft = dir.path().join("soft.pt");
    std::os::unix::fs::symlink(dir.path().join("elsewhere.pt"), &soft).unwrap();
    let other = dir.path().join("other.pt");
    std::fs::write(&other, b"keep").unwrap();
    let soft_other = dir.path().join("soft_other.pt");
    std::os::unix::fs::symlink(&other, &soft_other).unwrap();
    for (out, want) in [
        (&hard, "is the input file"),
        (&soft, "is a symbolic link"),
        (&soft_other, "is a symbolic link"),
    ] {
        let o = run(&[
            "convert",
            input.to_str().unwrap(),
            "--to",
            "v5_12_4",
            "-o",
            out.to_str().unwrap(),
            "--force",
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", out.display());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{err}");
    }
    assert_eq!(std::fs::read(&input).unwrap(), before);
    assert_eq!(std::fs::read(&other).unwrap(), b"keep");
    assert!(!dir.path().join("elsewhere.pt").exists());
    assert!(std::fs::symlink_metadata(&soft)
        .unwrap()
        .file_type()
        .is_symlink());
}

/// Built without the `train` feature, `--fit` and `--measure` say how to get them.
#[cfg(not(feature = "train"))]
#[test]
fn fit_and_measure_need_the_train_feature() {
    for flag in ["--fit", "--measure"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.pt");
        let o = run(&[
            "convert",
            "checkpoints/v5_11/best.pt",
            "--to",
            "v5_12_4",
            flag,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{flag}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("convert {flag}")), "{err}");
        assert!(err.contains("--features train"), "{err}");
        assert!(!out.exists());
    }
}
