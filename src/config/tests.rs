use super::*;

use std::fs;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upstream-configs")
}

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(fixtures_dir())
        .expect("fixture folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn fixture(name: &str) -> TrainingConfig {
    TrainingConfig::load(fixtures_dir().join(name)).expect("fixture parses")
}

/// Every mapping key path of a YAML value (sequences not entered).
fn key_paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Value::Mapping(m) = v {
        for (k, v) in m {
            let p = join(prefix, &key_string(k));
            out.push(p.clone());
            key_paths(v, &p, out);
        }
    }
}

#[test]
fn every_upstream_config_parses() {
    let files = fixtures();
    assert_eq!(files.len(), 18, "{files:?}");
    for f in &files {
        let cfg = TrainingConfig::load(f).unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.model.is_some(), "{}", f.display());
        assert!(cfg.training.is_some(), "{}", f.display());
        let model = cfg.model.as_ref().unwrap();
        assert!(model.latent_dim.is_some() && model.name.is_some());
        let t = cfg.training.as_ref().unwrap();
        assert!(t.epochs.is_some() && t.lr.is_some() && t.batch_size.is_some());
    }
}

#[test]
fn line_of_finds_every_key_of_every_config() {
    for f in fixtures() {
        let cfg = TrainingConfig::load(&f).unwrap();
        let mut paths = Vec::new();
        key_paths(&cfg.raw, "", &mut paths);
        let lines: Vec<&str> = cfg.text.lines().collect();
        for p in &paths {
            let line = cfg
                .line_of(p)
                .unwrap_or_else(|| panic!("{}: no line for {p}", f.display()));
            let key = p.rsplit('.').next().unwrap();
            let text = lines[line - 1].trim_start();
            assert!(
                text.starts_with(&format!("{key}:")),
                "{}:{line}: {p} -> {text:?}",
                f.display()
            );
        }
        // Keys inside sequences (scheduler phases) have no dotted path.
        assert_eq!(cfg.line_of("training.scheduler.phases.name"), None);
        assert_eq!(cfg.line_of("no.such.key"), None);
    }
}

#[test]
fn broken_config_has_null_checkpoint() {
    let cfg = fixture("v5_12_5_relaxed_D_from_scratch.yaml");
    let fc = cfg.frozen_checkpoint.as_ref().expect("section present");
    assert_eq!(fc.path, None);
    assert_eq!(fc.encoder_to_load, None);
    assert_eq!(fc.decoder_to_load, None);
    assert_eq!(cfg.checkpoint_path(), None);
    assert_eq!(cfg.model_name(), Some("TernaryVAEV5_11_PartialFreeze"));
    assert_eq!(cfg.line_of("frozen_checkpoint.path"), Some(51));
    assert!(cfg
        .location("frozen_checkpoint.path")
        .ends_with("v5_12_5_relaxed_D_from_scratch.yaml:51"));
    // The raw value is kept as null.
    assert_eq!(cfg.get("frozen_checkpoint.path"), Some(&Value::Null));
}

#[test]
fn missing_frozen_checkpoint_section() {
    let cfg = fixture("v5_11_11_homeostatic_rtx2060s.yaml");
    assert!(cfg.frozen_checkpoint.is_none());
    assert_eq!(cfg.checkpoint_path(), None);
    assert_eq!(cfg.line_of("frozen_checkpoint"), None);
}

#[test]
fn v5_12_4_typed_values() {
    let cfg = fixture("v5_12_4.yaml");
    let m = cfg.model.as_ref().unwrap();
    assert_eq!(m.name.as_deref(), Some("TernaryVAEV5_11_PartialFreeze"));
    assert_eq!(m.latent_dim, Some(16));
    assert_eq!(m.hidden_dim, Some(64));
    assert_eq!(m.projection_layers, Some(2));
    assert_eq!(m.projection_dropout, Some(0.1));
    assert_eq!(m.encoder_type, Some(EncoderKind::Improved));
    assert_eq!(m.decoder_type, Some(EncoderKind::Improved));
    assert_eq!(m.use_controller, Some(true));
    assert_eq!(m.logvar_min, Some(-10.0));
    let fc = cfg.frozen_checkpoint.as_ref().unwrap();
    assert_eq!(fc.path.as_deref(), Some("checkpoints/v5_12_4/best_Q.pt"));
    assert_eq!(fc.encoder_to_load, Some(EncoderToLoad::Both));
    assert_eq!(fc.decoder_to_load, Some(DecoderToLoad::DecoderA));
    assert_eq!(cfg.checkpoint_path(), Some("checkpoints/v5_12_4/best_Q.pt"));
    assert_eq!(cfg.line_of("frozen_checkpoint"), Some(68));
    assert_eq!(cfg.line_of("frozen_checkpoint.path"), Some(69));
    assert_eq!(cfg.line_of("training.epochs"), Some(133));
    let t = cfg.training.as_ref().unwrap();
    assert_eq!(t.epochs, Some(30));
    let sched = t.scheduler.as_ref().unwrap();
    assert!(sched.kind.is_some());
    let v = cfg.version.as_ref().unwrap();
    assert_eq!(v.model.as_deref(), Some("5.12.4"));
    assert_eq!(v.changes.as_ref().map(Vec::len), Some(3));
    assert_eq!(
        cfg.checkpoints.as_ref().unwrap().save_dir.as_deref(),
        Some("checkpoints/v5_12_4_fixed")
    );
    assert!(cfg.device.as_ref().unwrap().cuda_device.is_some());
}

#[test]
fn v5_11_values() {
    let cfg = fixture("v5_11.yaml");
    assert_eq!(cfg.model_name(), Some("TernaryVAEV5_11"));
    assert_eq!(cfg.checkpoint_path(), Some("checkpoints/v5_5/latest.pt"));
    let loss = cfg.loss.as_ref().unwrap();
    assert!(loss.radial.as_ref().unwrap().inner_radius.is_some());
    assert!(loss.geodesic.as_ref().unwrap().n_pairs.is_some());
}

#[test]
fn unknown_keys_are_listed() {
    let cfg = fixture("v5_12_5_relaxed_D_from_scratch.yaml");
    let unknown = cfg.unknown_keys();
    for k in [
        "torch_compile.enabled",
        "torch_compile.backend",
        "mixed_precision.dtype",
    ] {
        assert!(unknown.contains(&k.to_string()), "{k} not in {unknown:?}");
    }
    for k in [
        "model.latent_dim",
        "frozen_checkpoint.path",
        "training.epochs",
        "model",
    ] {
        assert!(!unknown.contains(&k.to_string()), "{k} in {unknown:?}");
    }
    // Modelled sections do not leak; every unknown key exists in the raw document.
    for k in &unknown {
        assert!(cfg.get(k).is_some(), "{k}");
    }

    let cfg = fixture("v5_12_4_extended_grokking.yaml");
    let unknown = cfg.unknown_keys();
    for k in [
        "training.scheduler.phases",
        "checkpoints.checkpoint_phases",
        "training.grokking_detection.enabled",
    ] {
        assert!(unknown.contains(&k.to_string()), "{k} not in {unknown:?}");
    }

    // Across all configs: the modelled fields of §7 are never unknown.
    for f in fixtures() {
        let cfg = TrainingConfig::load(&f).unwrap();
        for k in cfg.unknown_keys() {
            let top = k.split('.').next().unwrap();
            assert!(
                !["model", "frozen_checkpoint", "option_c", "homeostasis"].contains(&top),
                "{}: {k}",
                f.display()
            );
        }
    }
}

#[test]
fn syntax_error_names_file_and_line() {
    let text = "model:\n  latent_dim: 16\n hidden_dim: 64\n";
    let err = TrainingConfig::from_str(text, "bad.yaml").unwrap_err();
    let ConfigError::Syntax { line, column, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*line, Some(3));
    assert!(column.is_some());
    let msg = err.to_string();
    assert!(msg.starts_with("bad.yaml:3:"), "{msg}");
    assert!(msg.contains("YAML syntax error"), "{msg}");
    assert!(!msg.contains(" at line "), "{msg}");

    let err = TrainingConfig::from_str("model:\n  a: 1\n  a: 2\n", "dup.yaml").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
    assert!(err.to_string().starts_with("dup.yaml:"), "{err}");
    assert!(err.to_string().contains("duplicate"), "{err}");

    let err = TrainingConfig::from_str("a: [1, 2\n", "flow.yaml").unwrap_err();
    assert!(err.to_string().starts_with("flow.yaml:"), "{err}");
}

#[test]
fn type_error_names_key_and_line() {
    let text = "model:\n  name: X\n  latent_dim: sixteen\n";
    let err = TrainingConfig::from_str(text, "cfg.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "cfg.yaml:3: model.latent_dim: expected an integer, found \"sixteen\""
    );
    assert_eq!(err.line(), Some(3));
    assert_eq!(err.path(), Path::new("cfg.yaml"));

    let err = TrainingConfig::from_str("training:\n  epochs: -5\n", "c.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "c.yaml:2: training.epochs: expected a non-negative integer, found -5"
    );

    let err = TrainingConfig::from_str("model: 5\n", "c.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "c.yaml:1: model: expected a mapping, found 5"
    );

    let err = TrainingConfig::from_str(
        "frozen_checkpoint:\n  encoder_to_load: encoder_C\n",
        "c.yaml",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("frozen_checkpoint.encoder_to_load: expected one of both"),
        "{err}"
    );

    let err = TrainingConfig::from_str("model:\n  use_controller: [1]\n", "c.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "c.yaml:2: model.use_controller: expected a boolean, found a sequence"
    );

    let err = TrainingConfig::from_str("version:\n  changes:\n    - a\n    - [b]\n", "c.yaml")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "c.yaml:2: version.changes[1]: expected a string, found a sequence"
    );

    let err = TrainingConfig::from_str("- a\n- b\n", "c.yaml").unwrap_err();
    assert!(
        err.to_string().contains("(top level): expected a mapping"),
        "{err}"
    );
}

#[test]
fn io_error_names_file() {
    let err = TrainingConfig::load("/nonexistent/dir/cfg.yaml").unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(err
        .to_string()
        .starts_with("/nonexistent/dir/cfg.yaml: cannot read"));
}

#[test]
fn numbers_are_read_leniently() {
    let text = "\
training:
  lr: 8.0e-4
  weight_decay: 1e-4
  max_grad_norm: 1
  epochs: 100.0
  batch_size: \"512\"
  use_adaptive: yes
model:
  projection_dropout: 0
  max_radius: '0.95'
  latent_dim: 16
version:
  model: 5.12
  changes: single note
";
    let cfg = TrainingConfig::from_str(text, "x.yaml").unwrap();
    let t = cfg.training.as_ref().unwrap();
    assert_eq!(t.lr, Some(8.0e-4));
    assert_eq!(t.weight_decay, Some(1e-4));
    assert_eq!(t.max_grad_norm, Some(1.0));
    assert_eq!(t.epochs, Some(100));
    assert_eq!(t.batch_size, Some(512));
    assert_eq!(t.use_adaptive, Some(true));
    let m = cfg.model.as_ref().unwrap();
    assert_eq!(m.projection_dropout, Some(0.0));
    assert_eq!(m.max_radius, Some(0.95));
    let v = cfg.version.as_ref().unwrap();
    assert_eq!(v.model.as_deref(), Some("5.12"));
    assert_eq!(v.changes, Some(vec!["single note".to_string()]));

    let err = TrainingConfig::from_str("training:\n  epochs: 10.5\n", "x.yaml").unwrap_err();
    assert!(
        err.to_string().contains("expected an integer, found 10.5"),
        "{err}"
    );
}

#[test]
fn empty_and_null_sections() {
    let cfg = TrainingConfig::from_str("", "e.yaml").unwrap();
    assert_eq!(cfg.sections, Sections::default());
    assert!(cfg.unknown_keys().is_empty());

    let cfg = TrainingConfig::from_str("# only a comment\n", "e.yaml").unwrap();
    assert!(cfg.model.is_none());

    let cfg = TrainingConfig::from_str("frozen_checkpoint:\nmodel: ~\n", "e.yaml").unwrap();
    assert!(cfg.frozen_checkpoint.is_none());
    assert!(cfg.model.is_none());
    assert_eq!(cfg.line_of("frozen_checkpoint"), Some(1));
    assert_eq!(cfg.line_of("model"), Some(2));

    let cfg = TrainingConfig::from_str("extra:\n  a: {}\n  b: [1]\n  c: 1\n", "e.yaml").unwrap();
    assert_eq!(cfg.unknown_keys(), vec!["extra.a", "extra.b", "extra.c"]);
}

#[test]
fn serializes_to_json() {
    let cfg = fixture("v5_12_4.yaml");
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["model"]["latent_dim"], 16);
    assert_eq!(
        json["training"]["scheduler"]["type"],
        cfg.training
            .as_ref()
            .unwrap()
            .scheduler
            .as_ref()
            .unwrap()
            .kind
            .as_deref()
            .unwrap()
    );
    assert_eq!(json["frozen_checkpoint"]["encoder_to_load"], "both");
    assert_eq!(json["frozen_checkpoint"]["decoder_to_load"], "decoder_A");
    assert!(json["unknown_keys"].as_array().unwrap().len() > 3);
    assert!(json.get("raw").is_none());
}

/// serde_yaml value → checkpoint value, to compare with `Hints::from_config`.
fn to_format_value(v: &Value) -> crate::format::Value {
    use crate::format::Value as F;
    match v {
        Value::Null => F::None,
        Value::Bool(b) => F::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => F::Int(i),
            None => F::Float(n.as_f64().unwrap()),
        },
        Value::String(s) => F::Str(s.clone()),
        Value::Sequence(items) => F::List(items.iter().map(to_format_value).collect()),
        Value::Mapping(m) => F::Dict(
            m.iter()
                .map(|(k, v)| (to_format_value(k), to_format_value(v)))
                .collect(),
        ),
        Value::Tagged(t) => to_format_value(&t.value),
    }
}

#[test]
fn hints_match_the_arch_reader() {
    for f in fixtures() {
        let cfg = TrainingConfig::load(&f).unwrap();
        let expected = Hints::from_config(&to_format_value(&cfg.raw));
        assert_eq!(cfg.hints(), expected, "{}", f.display());
        assert_eq!(Hints::from(&cfg), expected);
    }
    let cfg = fixture("v5_12_4.yaml");
    let h = cfg.hints();
    assert_eq!(h.latent_dim, Some(16));
    assert_eq!(h.encoder, Some(EncoderKind::Improved));
    assert_eq!(h.projection_dropout, Some(true));
    assert!(crate::arch::resolve_config(&h).is_some());
}

// ---------------------------------------------------------------------------------------
// Path resolution
// ---------------------------------------------------------------------------------------

fn touch(p: &Path) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, b"x").unwrap();
}

struct Dirs {
    _tmp: tempfile::TempDir,
    cwd: PathBuf,
    config: PathBuf,
    root: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().join("work");
    let cfg_dir = tmp.path().join("repo/configs");
    let root = tmp.path().join("store");
    for d in [&cwd, &cfg_dir, &root] {
        fs::create_dir_all(d).unwrap();
    }
    Dirs {
        config: cfg_dir.join("v5.yaml"),
        cwd,
        root,
        _tmp: tmp,
    }
}

const RAW: &str = "checkpoints/v5_12_4/best_Q.pt";

#[test]
fn resolution_tries_cwd_then_config_folder_then_roots() {
    let d = dirs();
    let cfg_dir = d.config.parent().unwrap().to_path_buf();
    let extra = vec![d.root.clone()];

    // Nowhere: all three tried, in order.
    let r = resolve_checkpoint_path(RAW, &d.config, &d.cwd, &extra);
    assert_eq!(r.found, None);
    assert_eq!(
        r.tried,
        vec![
            (d.cwd.join(RAW), FROM_CWD),
            (cfg_dir.join(RAW), FROM_CONFIG),
            (d.root.join(RAW), FROM_ROOT),
        ]
    );

    // Only under the root.
    touch(&d.root.join(RAW));
    let r = resolve_checkpoint_path(RAW, &d.config, &d.cwd, &extra);
    assert_eq!(r.found, Some((d.root.join(RAW), FROM_ROOT)));
    assert_eq!(r.tried.len(), 3);

    // The config folder wins over the root.
    touch(&cfg_dir.join(RAW));
    let r = resolve_checkpoint_path(RAW, &d.config, &d.cwd, &extra);
    assert_eq!(r.found, Some((cfg_dir.join(RAW), FROM_CONFIG)));
    assert_eq!(r.tried.len(), 2);

    // The working directory wins over everything.
    touch(&d.cwd.join(RAW));
    let r = resolve_checkpoint_path(RAW, &d.config, &d.cwd, &extra);
    assert_eq!(r.found, Some((d.cwd.join(RAW), FROM_CWD)));
    assert_eq!(r.tried, vec![(d.cwd.join(RAW), FROM_CWD)]);

    // `./` prefixes are dropped.
    let r = resolve_checkpoint_path(&format!("./{RAW}"), &d.config, &d.cwd, &extra);
    assert_eq!(r.found, Some((d.cwd.join(RAW), FROM_CWD)));
}

#[test]
fn resolution_of_absolute_and_relative_inputs() {
    let d = dirs();
    let abs = d.root.join("abs.pt");
    let r = resolve_checkpoint_path(abs.to_str().unwrap(), &d.config, &d.cwd, &[]);
    assert_eq!(r.tried, vec![(abs.clone(), FROM_ABSOLUTE)]);
    assert_eq!(r.found, None);
    touch(&abs);
    let r = resolve_checkpoint_path(abs.to_str().unwrap(), &d.config, &d.cwd, &[]);
    assert_eq!(r.found, Some((abs, FROM_ABSOLUTE)));

    // A config given relative to the working directory; the config folder is the cwd:
    // tried once. A relative root is taken from the cwd too.
    let r = resolve_checkpoint_path(
        "x.pt",
        Path::new("v5.yaml"),
        &d.cwd,
        &[PathBuf::from("sub")],
    );
    assert_eq!(
        r.tried,
        vec![
            (d.cwd.join("x.pt"), FROM_CWD),
            (d.cwd.join("sub/x.pt"), FROM_ROOT)
        ]
    );
    let roots = search_roots(
        Path::new("configs/v5.yaml"),
        &d.cwd,
        std::slice::from_ref(&d.root),
    );
    assert_eq!(
        roots,
        vec![
            (d.cwd.clone(), FROM_CWD),
            (d.cwd.join("configs"), FROM_CONFIG),
            (d.root.clone(), FROM_ROOT),
        ]
    );
}

#[test]
fn nearest_candidates_rank_by_name_then_distance() {
    let d = dirs();
    for p in [
        "checkpoints/v5_12_4/best_Q.pt",
        "checkpoints/v5_12_4/latest.pt",
        "checkpoints/v5_5/latest.pt",
        "old/runs/best_Q.pth",
        "checkpoints/v5_12_4/notes.txt",
        ".cache/checkpoints/v5_12_4b/best_Q.pt",
    ] {
        touch(&d.root.join(p));
    }
    touch(&d.cwd.join("checkpoints/v5_12_4_fixed/best_Q.pt"));
    let roots = vec![d.cwd.clone(), d.root.clone()];
    let got = nearest_candidates("checkpoints/v5_12_4b/best_Q.pt", &roots, 10);
    assert_eq!(
        got,
        vec![
            d.root.join("checkpoints/v5_12_4/best_Q.pt"),
            d.cwd.join("checkpoints/v5_12_4_fixed/best_Q.pt"),
            d.root.join("checkpoints/v5_12_4/latest.pt"),
            d.root.join("checkpoints/v5_5/latest.pt"),
            d.root.join("old/runs/best_Q.pth"),
        ]
    );
    assert_eq!(
        nearest_candidates("checkpoints/v5_12_4b/best_Q.pt", &roots, 1).len(),
        1
    );
    assert!(nearest_candidates("x.pt", &[d.root.join("missing")], 5).is_empty());
}

#[test]
fn levenshtein_distance() {
    assert_eq!(levenshtein("", ""), 0);
    assert_eq!(levenshtein("abc", ""), 3);
    assert_eq!(levenshtein("kitten", "sitting"), 3);
    assert_eq!(levenshtein("v5_12_4/best_Q.pt", "v5_12_4b/best_Q.pt"), 1);
}

#[test]
fn nesting_is_measured_outside_quotes_and_comments() {
    use super::too_deep;
    assert_eq!(too_deep("a: [[[]]]\n", 3), None);
    assert_eq!(too_deep("a: [[[[]]]]\n", 3), Some((1, 7)));
    // Brackets in quoted scalars and comments do not count.
    assert_eq!(too_deep("a: '[[[[' # [[[[\nb: \"{{{{\\\"{{\"\n", 3), None);
    assert_eq!(too_deep("a: 'it''s'\nb: [[[[1]]]]\n", 3), Some((2, 7)));
    assert_eq!(too_deep("x#[[[[: 1\n", 3), Some((1, 6)));
}

#[test]
fn hostile_documents_fail_fast_with_a_clear_error() {
    let deep = format!("model: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let e = TrainingConfig::from_str(&deep, "deep.yaml").unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::TooDeep {
                line: 1,
                limit: 32,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "deep.yaml:1:40: YAML nested deeper than 32 levels"
    );

    let mut bomb = vec![r#"a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]"#.to_string()];
    for i in 1..10 {
        bomb.push(format!(
            "a{i}: &a{i} [{}]",
            vec![format!("*a{}", i - 1); 10].join(",")
        ));
    }
    let e = TrainingConfig::from_str(&bomb.join("\n"), "bomb.yaml").unwrap_err();
    assert!(e.to_string().contains("repetition limit exceeded"), "{e}");

    let e = TrainingConfig::from_str("model:\n  name: a\n  name: b\n", "dup.yaml").unwrap_err();
    assert!(
        e.to_string().contains("duplicate entry with key \"name\""),
        "{e}"
    );

    let huge = format!("model:\n  latent_dim: 1{}\n", "0".repeat(400));
    let e = TrainingConfig::from_str(&huge, "huge.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("huge.yaml:2: model.latent_dim: expected an integer"),
        "{e}"
    );
    assert!(e.ends_with("(403 characters)"), "{e}");

    let big = "#".repeat(MAX_CONFIG_BYTES as usize + 1);
    let e = TrainingConfig::from_str(&big, "big.yaml").unwrap_err();
    assert!(matches!(e, ConfigError::NotAConfig { .. }), "{e}");
}

#[cfg(unix)]
#[test]
fn a_fifo_is_refused_without_being_opened() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("c.yaml");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let e = TrainingConfig::load(&fifo).unwrap_err();
    assert!(e.to_string().ends_with("c.yaml: not a regular file"), "{e}");
    assert_eq!(e.hint(), "name the training config's YAML file");
}
