//! `tvck check` (+ `--auto-fix [--write]`) and `tvck diff` on the real upstream configs,
//! with the sample checkpoints arranged as the configs expect (`checkpoints/…` relative
//! to the working directory) in a temporary folder. Snapshots in snapshots/.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{copy_dir, root, stdout, tvck};

/// A working directory laid out like the upstream project: checkpoints/ and configs/.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("checkpoints"), &dir.path().join("checkpoints"));
    copy_dir(
        &root().join("tests/fixtures/upstream-configs"),
        &dir.path().join("configs"),
    );
    std::fs::copy(
        root().join("tests/fixtures/configs/audit_size_mismatch.yaml"),
        dir.path().join("configs/audit_size_mismatch.yaml"),
    )
    .unwrap();
    // One modification time for every file: candidates that tie on everything else are
    // ranked newest first, and copies would get the copy order's times (a flaky ranking).
    same_mtime(dir.path());
    dir
}

fn same_mtime(dir: &Path) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600); // 2026-01-01
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            same_mtime(&e.path());
        } else {
            std::fs::File::options()
                .write(true)
                .open(e.path())
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
    }
}

/// Configs that must fail: `path: null` (or no frozen_checkpoint) for a class that needs one.
const BROKEN: [&str; 3] = [
    "ternary_fast_test.yaml",
    "v5_11_11_homeostatic_rtx2060s.yaml",
    "v5_12_5_relaxed_D_from_scratch.yaml",
];

#[test]
fn every_upstream_config_verdict() {
    let ws = workspace();
    let mut names: Vec<String> = std::fs::read_dir(root().join("tests/fixtures/upstream-configs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 18);
    for name in &names {
        let o = tvck(&["check", &format!("configs/{name}")], ws.path());
        let expected = if BROKEN.contains(&name.as_str()) {
            1
        } else {
            0
        };
        assert_eq!(o.status.code(), Some(expected), "{name}:\n{}", stdout(&o));
        let out = stdout(&o);
        assert!(
            out.starts_with(if expected == 1 { "FAIL " } else { "PASS " }),
            "{out}"
        );
        snap_run!(format!("check_{}", name.trim_end_matches(".yaml")), o);
    }
}

#[test]
fn broken_config_is_caught_with_location_and_fix() {
    let ws = workspace();
    let o = tvck(
        &[
            "check",
            "configs/v5_12_5_relaxed_D_from_scratch.yaml",
            "--json",
        ],
        ws.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["errors"], 1);
    let f = &v["findings"][0];
    assert_eq!(f["severity"], "error");
    assert_eq!(f["rule"], "frozen-checkpoint-missing");
    assert_eq!(
        f["location"],
        "configs/v5_12_5_relaxed_D_from_scratch.yaml:51"
    );
    assert!(f["cause"].as_str().unwrap().contains("0.01%"));
    assert!(f["fix"].as_str().unwrap().contains("--auto-fix"));
    snap!(
        "check_broken_json",
        serde_json::to_string_pretty(&v).unwrap()
    );
}

#[test]
fn audit_size_mismatch_in_pytorch_wording() {
    let ws = workspace();
    let o = tvck(
        &["check", "configs/audit_size_mismatch.yaml", "--json"],
        ws.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "size-mismatch")
        .expect("size-mismatch finding");
    let details: Vec<&str> = f["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(details.contains(
        &"size mismatch for projection.proj_A.direction_net.4.weight: copying a param with shape [16, 64] from checkpoint, the shape in current model is [64, 64]."
    ), "{details:#?}");
    // All of them at once: 8 mismatches (direction_net.4 and radius_net.3, A and B) and the missing keys.
    assert_eq!(
        details
            .iter()
            .filter(|d| d.starts_with("size mismatch for "))
            .count(),
        8
    );
    assert!(details
        .iter()
        .any(|d| d.starts_with("Missing key(s) in state_dict: ")));
    assert!(f["cause"]
        .as_str()
        .unwrap()
        .contains("model.projection_layers = 1 (the config asks 2)"));
    assert!(f["fix"]
        .as_str()
        .unwrap()
        .contains("model.projection_layers: 1"));
    snap_run!(
        "check_audit_size_mismatch",
        tvck(&["check", "configs/audit_size_mismatch.yaml"], ws.path())
    );
}

#[test]
fn missing_checkpoint_lists_tried_paths_and_candidates() {
    let ws = workspace();
    let text = std::fs::read_to_string(ws.path().join("configs/v5_11.yaml"))
        .unwrap()
        .replace("checkpoints/v5_5/latest.pt", "checkpoints/v5_5/lastest.pt");
    std::fs::write(ws.path().join("configs/typo.yaml"), text).unwrap();
    let o = tvck(&["check", "configs/typo.yaml", "--json"], ws.path());
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = &v["findings"][0];
    assert_eq!(f["rule"], "frozen-checkpoint-not-found");
    let details = f["details"].to_string();
    assert!(
        details.contains("relative to the working directory"),
        "{details}"
    );
    assert!(
        details.contains("relative to the config folder"),
        "{details}"
    );
    assert!(
        details.contains("checkpoints/v5_5/latest.pt"),
        "nearest candidate: {details}"
    );
    // --checkpoint-root resolves it from elsewhere.
    let other = tempfile::tempdir().unwrap();
    let o = tvck(
        &[
            "check",
            &ws.path().join("configs/v5_11.yaml").to_string_lossy(),
            "--checkpoint-root",
            &ws.path().to_string_lossy(),
            "--json",
        ],
        other.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["frozen_checkpoint"]["resolved_via"], "--checkpoint-root");
}

#[test]
fn auto_fix_diffs() {
    let ws = workspace();
    for name in BROKEN.iter().copied().chain(["audit_size_mismatch.yaml"]) {
        let path = format!("configs/{name}");
        let o = tvck(&["check", &path, "--auto-fix"], ws.path());
        assert_eq!(
            o.status.code(),
            Some(1),
            "{name}: without --write the config still fails"
        );
        let out = stdout(&o);
        if name == "ternary_fast_test.yaml" {
            // latent_dim 8: no sample checkpoint fits, and auto-fix says so instead of guessing.
            assert!(
                out.contains("no checkpoint under the searched folders fits this config"),
                "{out}"
            );
            assert!(!out.contains("\n--- "), "{out}");
        } else {
            let diff = out
                .split("\n--- ")
                .nth(1)
                .unwrap_or_else(|| panic!("{name}: no diff in\n{out}"));
            assert!(diff.contains("+  path: checkpoints/"), "{name}: {diff}");
        }
        let ws_path = ws.path().canonicalize().unwrap();
        snap_run!(
            format!("autofix_{}", name.trim_end_matches(".yaml")),
            o,
            &[(&*ws_path.to_string_lossy(), "<ws>")]
        );
    }
}

#[test]
fn auto_fix_write_keeps_comments_and_makes_a_backup() {
    let ws = workspace();
    let path = ws
        .path()
        .join("configs/v5_12_5_relaxed_D_from_scratch.yaml");
    let before = std::fs::read_to_string(&path).unwrap();
    let o = tvck(
        &[
            "check",
            "configs/v5_12_5_relaxed_D_from_scratch.yaml",
            "--auto-fix",
            "--write",
        ],
        ws.path(),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "after the fix the config passes:\n{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("After the fix: PASS"));
    let after = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        std::fs::read_to_string(
            ws.path()
                .join("configs/v5_12_5_relaxed_D_from_scratch.yaml.bak")
        )
        .unwrap(),
        before
    );
    let (b, a): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    assert_eq!(b.len(), a.len());
    let changed: Vec<usize> = (0..b.len())
        .filter(|i| b[*i] != a[*i])
        .map(|i| i + 1)
        .collect();
    assert_eq!(
        changed,
        vec![51, 52, 53],
        "only the frozen_checkpoint lines change"
    );
    assert_eq!(a[50], "  path: checkpoints/v5_12_4/best_Q.pt  # CRITICAL: No frozen checkpoint - train from scratch!");
    assert!(
        after.contains("# V5.12.5 Constraint Relaxation Experiment D"),
        "comments kept"
    );
    // Nothing left behind but the config and its backup.
    let extra: Vec<String> = std::fs::read_dir(ws.path().join("configs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tvck") || n.ends_with(".tmp"))
        .collect();
    assert!(extra.is_empty(), "{extra:?}");
}

/// Make a folder read-only even for root (chmod alone does not stop root): chattr +i.
struct ReadOnly(PathBuf);
impl ReadOnly {
    fn new(dir: &Path) -> ReadOnly {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let probe = dir.join(".probe");
        if std::fs::write(&probe, b"").is_ok() {
            std::fs::remove_file(&probe).unwrap();
            let ok = Command::new("chattr")
                .arg("+i")
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "cannot make {} read-only (running as root without chattr?)",
                dir.display()
            );
        }
        ReadOnly(dir.to_path_buf())
    }
}
impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn auto_fix_write_into_read_only_folder_fails_clearly() {
    let ws = workspace();
    let cfg_dir = ws.path().join("ro");
    std::fs::create_dir(&cfg_dir).unwrap();
    let src = ws
        .path()
        .join("configs/v5_12_5_relaxed_D_from_scratch.yaml");
    let path = cfg_dir.join("D.yaml");
    std::fs::copy(&src, &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let o = {
        let _guard = ReadOnly::new(&cfg_dir);
        tvck(&["check", "ro/D.yaml", "--auto-fix", "--write"], ws.path())
    };
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("error: cannot write the backup ro/D.yaml.bak"),
        "{err}"
    );
    assert!(err.contains("the config is left as it was"), "{err}");
    assert!(err.contains("hint: make the folder ro writable"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn strict_lists_unknown_keys() {
    let ws = workspace();
    let o = tvck(
        &["check", "configs/v5_12_4.yaml", "--strict", "--json"],
        ws.path(),
    );
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let unknown: Vec<String> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "unknown-key")
        .map(|f| f["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        unknown
            .iter()
            .any(|m| m.contains("`torch_compile.enabled`")),
        "{unknown:?}"
    );
}

#[test]
fn config_errors_name_the_file_and_line() {
    let ws = workspace();
    std::fs::write(
        ws.path().join("bad.yaml"),
        "model:\n  latent_dim: sixteen\n",
    )
    .unwrap();
    let o = tvck(&["check", "bad.yaml"], ws.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.yaml:2") && err.contains("model.latent_dim"),
        "{err}"
    );
    assert_eq!(
        tvck(&["check", "nope.yaml"], ws.path()).status.code(),
        Some(2)
    );
    assert_eq!(
        tvck(&["check", "bad.yaml", "--write"], ws.path())
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn diff_proves_the_frozen_encoder_stayed_frozen() {
    let o = tvck(
        &[
            "diff",
            "checkpoints/v5_5/latest.pt",
            "checkpoints/v5_11/best.pt",
            "--only",
            "encoder_A",
        ],
        &root(),
    );
    assert_eq!(o.status.code(), Some(0), "encoder_A must be identical");
    let out = stdout(&o);
    assert!(out.contains("SAME: 10 identical"), "{out}");
    snap_run!("diff_frozen_encoder", o);

    let o = tvck(
        &[
            "diff",
            "checkpoints/v5_5/latest.pt",
            "checkpoints/v5_5_early/latest.pt",
            "--only",
            "decoder_A",
            "--json",
        ],
        &root(),
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["counts"]["changed"], 6);
    assert!(v["keys"][0]["max_abs_diff"].as_f64().unwrap() > 0.0);

    // Same weights in three containers.
    for other in ["exports/v5_12_4.safetensors", "exports/v5_12_4_legacy.pt"] {
        let o = tvck(
            &[
                "diff",
                "checkpoints/v5_12_4/best_Q.pt",
                &format!("checkpoints/{other}"),
            ],
            &root(),
        );
        assert_eq!(o.status.code(), Some(0), "{other}: {}", stdout(&o));
    }

    let o = tvck(
        &["diff", "checkpoints/v5_11/best.pt", "--arch", "v5_12_4"],
        &root(),
    );
    assert_eq!(o.status.code(), Some(1));
    snap_run!("diff_v5_11_vs_arch_v5_12_4", o);
    assert_eq!(
        tvck(
            &["diff", "checkpoints/v5_11/best.pt", "--arch", "v9"],
            &root()
        )
        .status
        .code(),
        Some(2)
    );
}

/// The silent low-coverage failure tvck must not make itself: a v5.11 → v5.12.4 conversion
/// changes what the model does, so its file carries no metrics of its own, scan says so, and
/// auto-fix never ranks it by the source's numbers; a config that loads it is warned.
#[test]
fn unmeasured_conversions_are_marked_and_ranked_last() {
    // A small tree, so that every candidate shows in the table: one trained v5.12.4
    // checkpoint, the v5.11 source and its conversion.
    let ws = workspace();
    for d in ["exports", "v5_5", "v5_5_early", "v5_11_homeostasis"] {
        std::fs::remove_dir_all(ws.path().join("checkpoints").join(d)).unwrap();
    }
    let o = tvck(
        &[
            "convert",
            "checkpoints/v5_11/best.pt",
            "--to",
            "v5_12_4",
            "-o",
            "checkpoints/converted/best.v5_12_4.pt",
        ],
        ws.path(),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // inspect: no metrics of its own; the source's kept in the record.
    let o = tvck(
        &[
            "inspect",
            "checkpoints/converted/best.v5_12_4.pt",
            "--no-hash",
        ],
        ws.path(),
    );
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.contains("Metrics:     none (converted, not measured; the source's are kept under migration.source_metrics)"),
        "{out}"
    );
    let utc = out
        .lines()
        .find(|l| l.trim_start().starts_with("utc: "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    snap_run!("inspect_converted", o, &[(&utc, "    utc: <utc>")]);

    // scan: the converted file shows no metrics, and says why.
    let o = tvck(&["scan", "checkpoints"], ws.path());
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    let row = out
        .lines()
        .find(|l| l.contains("converted/best.v5_12_4.pt"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("converted, not measured"), "{row}");
    assert!(!row.contains("cov 100.00%"), "{row}");
    snap_run!("scan_with_converted", o);
    let o = tvck(&["scan", "checkpoints", "--json"], ws.path());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let files = j["files"].as_array().unwrap();
    let provenance = |p: &str| {
        files
            .iter()
            .find(|f| f["path"].as_str().unwrap().ends_with(p))
            .unwrap_or_else(|| panic!("no {p}"))["metrics"]
            .clone()
    };
    assert_eq!(
        provenance("converted/best.v5_12_4.pt"),
        serde_json::json!({"provenance": "not_measured"})
    );
    assert_eq!(provenance("v5_12_4/best_Q.pt")["provenance"], "trained");

    // auto-fix: every measured candidate first; the conversion after them, marked.
    let cfg = "configs/v5_12_5_relaxed_D_from_scratch.yaml";
    let o = tvck(&["check", cfg, "--auto-fix", "--json"], ws.path());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cands = j["auto_fix"]["candidates"].as_array().unwrap();
    let at = cands
        .iter()
        .position(|c| c["path"] == "checkpoints/converted/best.v5_12_4.pt")
        .unwrap_or_else(|| panic!("{cands:?}"));
    let conv = &cands[at];
    assert_eq!(conv["metrics"], "not_measured");
    assert!(conv.get("coverage").is_none(), "{conv}");
    assert!(
        conv["why"]
            .as_str()
            .unwrap()
            .contains("not measured since conversion"),
        "{conv}"
    );
    for c in &cands[..at] {
        assert_ne!(c["metrics"], "not_measured", "{c}");
    }
    for c in &cands[at..] {
        assert!(
            c["metrics"] == "not_measured" || !c["exact"].as_bool().unwrap(),
            "a measured exact fit ranks after the unmeasured conversion: {c}"
        );
    }
    assert_eq!(cands[0]["path"], "checkpoints/v5_12_4/best_Q.pt");
    let o = tvck(&["check", cfg, "--auto-fix"], ws.path());
    let ws_path = ws.path().canonicalize().unwrap();
    snap_run!(
        "autofix_with_converted",
        o,
        &[(&*ws_path.to_string_lossy(), "<ws>")]
    );

    // check: a config whose frozen checkpoint is the unmeasured conversion is warned.
    let text = std::fs::read_to_string(ws.path().join("configs/v5_12_4.yaml")).unwrap();
    let text = text.replace(
        "checkpoints/v5_12_4/best_Q.pt",
        "checkpoints/converted/best.v5_12_4.pt",
    );
    std::fs::write(ws.path().join("configs/from_converted.yaml"), text).unwrap();
    let o = tvck(
        &["check", "configs/from_converted.yaml", "--json"],
        ws.path(),
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "frozen-checkpoint-not-measured")
        .unwrap_or_else(|| panic!("{j}"));
    assert_eq!(f["severity"], "warning");
    assert_eq!(j["frozen_checkpoint"]["metrics"], "not_measured");
    let o = tvck(&["check", "configs/from_converted.yaml"], ws.path());
    let out = stdout(&o);
    assert!(out.contains("converted, not measured"), "{out}");
    assert!(out.contains("--fit"), "{out}");
}

/// Settings a trainer cannot run with are errors of `check` (and so of `train`'s step 1).
#[test]
fn non_finite_and_out_of_range_numbers_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "model:\n  name: TernaryVAEV5_11\n  curvature: .inf\ntraining:\n  epochs: 10\n  lr: .nan\n  weight_decay: -0.1\n  max_grad_norm: 0\n",
    )
    .unwrap();
    let o = tvck(&["check", cfg.to_str().unwrap(), "--json"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let found: Vec<(String, String)> = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "number-not-finite" || f["rule"] == "training-range")
        .map(|f| {
            (
                f["message"].as_str().unwrap().to_string(),
                f["location"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let loc = |line: u32| format!("{}:{line}", cfg.display());
    assert_eq!(
        found,
        [
            (
                "model.curvature = inf: not a finite number".to_string(),
                loc(3)
            ),
            ("training.lr = NaN: not a finite number".to_string(), loc(6)),
            (
                "training.weight_decay = -0.1: must be 0 or more".to_string(),
                loc(7)
            ),
            (
                "training.max_grad_norm = 0: must be greater than 0".to_string(),
                loc(8)
            ),
        ]
    );
}
