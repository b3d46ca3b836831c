//! Integration tests: run the `tvck` binary on the sample checkpoints and the hostile
//! fixtures; snapshot its table and JSON output (snapshots/ at the repo root).

use crate::common;

use common::{root, stdout, tvck};

#[test]
fn scan_samples_table() {
    let o = tvck(&["scan", "checkpoints", "--hash"], &root());
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = stdout(&o);
    // The safetensors export holds the same weights as best_Q.pt (truth.json).
    assert!(out.contains("Duplicate weights"), "{out}");
    snap_run!("scan_samples_hash", o);
}

#[test]
fn scan_samples_without_hash() {
    let o = tvck(&["scan", "checkpoints"], &root());
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(!out.contains("Fingerprint"));
    snap_run!("scan_samples", o);
}

#[test]
fn scan_samples_json() {
    let o = tvck(&["scan", "checkpoints", "--hash", "--json"], &root());
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 8);
    let by = |p: &str| files.iter().find(|f| f["path"] == p).unwrap().clone();
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("checkpoints/truth.json")).unwrap())
            .unwrap();
    // Every file with a stated version is inferred as that version.
    for (file, t) in truth.as_object().unwrap() {
        if let Some(version) = t.get("version").and_then(|v| v.as_str()) {
            let got = by(file)["version"]["display"].as_str().unwrap().to_string();
            // "v5.11 (PartialFreeze)" is a v5.11 layout; truth.json names the variant apart.
            assert!(
                got == version || got.starts_with(&format!("{version} (")),
                "{file}: {got} vs {version}"
            );
            let partial = t
                .get("variant")
                .and_then(|v| v.as_str())
                .is_some_and(|v| v.contains("partial_freeze"));
            assert_eq!(got.contains("PartialFreeze"), partial, "{file}: {got}");
        }
    }
    assert_eq!(
        by("exports/v5_12_4.safetensors")["fingerprint"],
        by("v5_12_4/best_Q.pt")["fingerprint"]
    );
    assert_eq!(v["duplicates"].as_array().unwrap().len(), 1);
    snap!(
        "scan_samples_json",
        serde_json::to_string_pretty(&v).unwrap()
    );
}

#[test]
fn inspect_each_sample() {
    for file in [
        "v5_5/latest.pt",
        "v5_5_early/latest.pt",
        "v5_11/best.pt",
        "v5_11_homeostasis/best.pt",
        "v5_12_4/best_Q.pt",
        "exports/v5_12_4_state_dict.pt",
        "exports/v5_12_4_legacy.pt",
        "exports/v5_12_4.safetensors",
    ] {
        let path = format!("checkpoints/{file}");
        let o = tvck(&["inspect", &path], &root());
        assert_eq!(
            o.status.code(),
            Some(0),
            "{file}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let name = format!("inspect_{}", file.replace(['/', '.'], "_"));
        snap_run!(name, o);
    }
}

#[test]
fn inspect_json_is_stable() {
    let o = tvck(&["inspect", "checkpoints/v5_11/best.pt", "--json"], &root());
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["metrics"]["coverage"], 1.0);
    assert_eq!(v["tree"]["config"]["model"]["name"], "TernaryVAEV5_11");
    assert_eq!(
        v["tree"]["metrics"]["mean_radius"],
        serde_json::json!(0.4699999988079071)
    );
    snap!(
        "inspect_v5_11_json",
        serde_json::to_string_pretty(&v).unwrap()
    );
}

fn hostile_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("tests/fixtures/hostile");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

#[test]
fn hostile_files_are_flagged_and_nothing_runs() {
    let dir = hostile_copy();
    // Run inside the folder: a payload that ran would create tvck-pwned.txt here.
    let o = tvck(&["scan", ".", "--hash", "--json"], dir.path());
    assert_eq!(o.status.code(), Some(1), "findings must give exit code 1");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let files = v["files"].as_array().unwrap();
    let by = |p: &str| {
        files
            .iter()
            .find(|f| f["path"] == p)
            .unwrap_or_else(|| panic!("{p} not scanned"))
            .clone()
    };
    let unsafe_of = |p: &str| {
        by(p)["unsafe_globals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        unsafe_of("os_system.pt")
            .iter()
            .any(|g| g.ends_with(".system")),
        "{:?}",
        by("os_system.pt")
    );
    assert!(unsafe_of("builtins_eval.pt").contains(&"builtins.eval".to_string()));
    assert!(unsafe_of("legacy_os_system.pth")
        .iter()
        .any(|g| g.ends_with(".system")));
    for (file, words) in [
        ("truncated.pt", "zip"),
        ("empty.pt", "empty"),
        ("not_a_checkpoint.pt", "not a checkpoint"),
        ("huge_claim.safetensors", "claims"),
        ("bad_header_len.safetensors", "header"),
    ] {
        let err = by(file)["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{file} must be an error"))
            .to_string();
        assert!(err.to_lowercase().contains(words), "{file}: {err}");
    }
    for o in [
        tvck(&["scan", "."], dir.path()),
        tvck(&["inspect", "os_system.pt"], dir.path()),
        tvck(&["inspect", "legacy_os_system.pth"], dir.path()),
        tvck(&["inspect", "builtins_eval.pt"], dir.path()),
    ] {
        assert_eq!(o.status.code(), Some(1));
    }
    assert!(
        !dir.path().join("tvck-pwned.txt").exists(),
        "a pickle payload ran!"
    );
    assert!(
        !root().join("tvck-pwned.txt").exists(),
        "a pickle payload ran!"
    );
    snap_run!("scan_hostile", tvck(&["scan", "."], dir.path()));
}

#[test]
fn inspect_reports_errors_with_the_file_name() {
    let dir = hostile_copy();
    for f in [
        "truncated.pt",
        "empty.pt",
        "not_a_checkpoint.pt",
        "huge_claim.safetensors",
    ] {
        let o = tvck(&["inspect", f], dir.path());
        assert_eq!(o.status.code(), Some(1), "{f}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with(&format!("error: {f}: ")), "{f}: {err}");
        assert!(err.contains("hint:"), "{err}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let o = tvck(&["scan", "does-not-exist"], &root());
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does-not-exist: no such file"));
    assert_eq!(tvck(&["frobnicate"], &root()).status.code(), Some(2));
    assert_eq!(
        tvck(&["inspect", "checkpoints"], &root()).status.code(),
        Some(2)
    );
}

/// Without the `train` feature the trainer's subcommands exist and say how to get them.
#[cfg(not(feature = "train"))]
#[test]
fn eval_and_train_need_the_train_feature() {
    for args in [
        &["eval", "checkpoints/v5_11/best.pt"][..],
        &[
            "train",
            "--config",
            "tests/fixtures/configs/train_v5_11_smoke.yaml",
        ][..],
    ] {
        let o = tvck(args, &root());
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--features train"), "{err}");
        assert!(stdout(&o).is_empty());
    }
}

/// A tree of many files, readable and not: the sample checkpoints three times over and
/// the hostile fixtures in between.
fn mixed_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let samples = root().join("checkpoints");
    for copy in ["a", "b", "c"] {
        for e in walkdir::WalkDir::new(&samples).into_iter().flatten() {
            if e.file_type().is_file() && e.path().extension().is_some_and(|x| x != "json") {
                let rel = e.path().strip_prefix(&samples).unwrap();
                let dst = dir.path().join(copy).join(rel);
                std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                std::fs::copy(e.path(), dst).unwrap();
            }
        }
    }
    for e in std::fs::read_dir(root().join("tests/fixtures/hostile")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join("b").join(e.file_name())).unwrap();
    }
    dir
}

fn scan_json(dir: &std::path::Path, extra: &[&str], engine: Option<&str>) -> serde_json::Value {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tvck"));
    cmd.args(["scan", ".", "--hash", "--json"])
        .args(extra)
        .current_dir(dir);
    if let Some(e) = engine {
        cmd.env("TVCK_HASH_ENGINE", e);
    }
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(1), "the hostile files are findings");
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn hashing_gives_the_same_fingerprints_whatever_the_engine_and_batching() {
    let dir = mixed_tree();
    let base = scan_json(dir.path(), &[], None);
    assert_eq!(scan_json(dir.path(), &[], Some("sha2")), base);
    assert_eq!(scan_json(dir.path(), &["-j", "1"], None), base);
    assert_eq!(scan_json(dir.path(), &["-j", "3"], Some("sha2")), base);
    let files = base["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "files come back in path order");
    // Each readable file's fingerprint is the one `inspect` (a whole-file read, one
    // tensor at a time) computes.
    let mut checked = 0;
    for f in files {
        let Some(fp) = f["fingerprint"].as_str() else {
            assert!(f["error"].is_string(), "{f}");
            continue;
        };
        let path = f["path"].as_str().unwrap();
        let o = tvck(&["inspect", path, "--json"], dir.path());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["fingerprint"].as_str(), Some(fp), "{path}");
        checked += 1;
    }
    assert!(checked >= 24, "{checked} files fingerprinted");
    // Three copies of each sample: every group holds a multiple of three files.
    for g in base["duplicates"].as_array().unwrap() {
        let n = g["files"].as_array().unwrap().len();
        assert_eq!(n % 3, 0, "{g}");
    }
}

/// A file cannot rewrite the screen: escape sequences and bidi overrides in a pickle's
/// global names and in file names are shown escaped by every human rendering (scan,
/// inspect, errors, diff); JSON keeps the exact strings.
#[test]
fn hostile_text_is_escaped_before_it_reaches_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // A 28-byte pickle: GLOBAL `os\x1b[2J` `system`, called with no arguments.
    let pickle = b"\x80\x02cos\x1b[2J\nsystem\n)R.";
    let evil_global = dir.path().join("global.pt");
    std::fs::write(&evil_global, pickle).unwrap();
    // A file name that retitles the window and reverses the text after it.
    let evil_name = "t\u{1b}]0;pwned\u{7}\u{202e}tp.pt";
    std::fs::write(dir.path().join(evil_name), b"not a checkpoint").unwrap();

    let no_raw = |what: &str, s: &str| {
        assert!(
            !s.contains('\u{1b}') && !s.contains('\u{7}') && !s.contains('\u{202e}'),
            "{what} printed raw control text: {s:?}"
        );
    };
    let o = tvck(&["scan", dir.path().to_str().unwrap()], &root());
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    no_raw("scan", &out);
    assert!(out.contains("os\\x1b[2J.system"), "{out}");
    assert!(out.contains("t\\x1b]0;pwned\\x07\\u{202e}tp.pt"), "{out}");

    let o = tvck(&["inspect", evil_global.to_str().unwrap()], &root());
    assert_eq!(o.status.code(), Some(1));
    no_raw("inspect", &stdout(&o));
    assert!(stdout(&o).contains("os\\x1b[2J.system"), "{}", stdout(&o));

    let evil_path = dir.path().join(evil_name);
    let o = tvck(&["inspect", evil_path.to_str().unwrap()], &root());
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    no_raw("inspect's error", &err);
    no_raw("inspect's output", &stdout(&o));
    assert!(err.contains("t\\x1b]0;pwned\\x07\\u{202e}tp.pt"), "{err}");

    let o = tvck(
        &[
            "diff",
            evil_global.to_str().unwrap(),
            evil_path.to_str().unwrap(),
        ],
        &root(),
    );
    no_raw("diff", &stdout(&o));
    no_raw("diff's error", &String::from_utf8_lossy(&o.stderr));

    // JSON: the exact strings, escaped by JSON itself.
    let o = tvck(&["scan", dir.path().to_str().unwrap(), "--json"], &root());
    let raw = stdout(&o);
    no_raw("scan --json", &raw);
    let j: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let text = j.to_string();
    assert!(text.contains("os\\u001b[2J"), "{text}");
    let names: Vec<&str> = j["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(evil_name)), "{names:?}");
}

/// NaN or infinite weights are a finding of inspect (exit 1) and an error of check when
/// the frozen checkpoint holds them: never a crash, never a silent NaN run.
#[test]
fn non_finite_weights_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("nan.pt");
    common::write_with_non_finite(
        &root().join("checkpoints/v5_12_4/best_Q.pt"),
        &bad,
        "encoder_A.encoder.0.weight",
    );
    let o = tvck(&["inspect", bad.to_str().unwrap(), "--no-hash"], &root());
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains(
            "NON-FINITE: `encoder_A.encoder.0.weight` holds 1 NaN and 1 infinite of 2304 values"
        ),
        "{out}"
    );
    let j: serde_json::Value = serde_json::from_slice(
        &tvck(
            &["inspect", bad.to_str().unwrap(), "--json", "--no-hash"],
            &root(),
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(j["findings"][0]["kind"], "non_finite");

    let cfg = std::fs::read_to_string(root().join("tests/fixtures/upstream-configs/v5_12_4.yaml"))
        .unwrap()
        .replace("checkpoints/v5_12_4/best_Q.pt", bad.to_str().unwrap());
    let cfg_path = dir.path().join("c.yaml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let o = tvck(&["check", cfg_path.to_str().unwrap(), "--json"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "frozen-checkpoint-non-finite")
        .unwrap_or_else(|| panic!("{j}"));
    assert_eq!(f["severity"], "error");
    assert_eq!(
        f["details"][0],
        "`encoder_A.encoder.0.weight` holds 1 NaN and 1 infinite of 2304 values"
    );
}
