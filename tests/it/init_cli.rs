//! `tvck init --template`: every template's config passes `tvck check`; the refusals.
//!
//! Each run happens in a temp folder holding a copy of `checkpoints/` (a default search
//! folder), with `TVCK_INDEX` pointing at a file that does not exist (no index answers).

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{copy_dir, root, run_text};

fn tvck_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tvck"))
        .args(args)
        .current_dir(dir)
        .env("TVCK_INDEX", dir.join("no-index.sqlite"))
        .output()
        .expect("run tvck")
}

/// A temp folder with `checkpoints/` in it.
fn workspace() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    copy_dir(&root().join("checkpoints"), &t.path().join("checkpoints"));
    t
}

fn filters(dir: &Path) -> Vec<(String, String)> {
    let canon = dir.canonicalize().unwrap();
    vec![
        (canon.display().to_string(), "[TMP]".to_string()),
        (dir.display().to_string(), "[TMP]".to_string()),
    ]
}

fn snap_run_in(name: &str, o: &Output, dir: &Path) {
    let f = filters(dir);
    let f: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    crate::snap!(name, run_text(o, &f));
}

/// Every top-level key of the written config has a comment line right above it (or
/// above its comment block).
fn assert_commented(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let top_key = !l.starts_with([' ', '#']) && l.ends_with(':');
        if top_key {
            assert!(
                i > 0 && lines[i - 1].starts_with('#'),
                "section `{l}` has no comment above it:\n{text}"
            );
        }
    }
}

#[test]
fn every_template_writes_a_config_that_check_passes() {
    let t = workspace();
    let dir = t.path();
    for (name, args) in [
        ("production", vec!["--template", "production"]),
        ("quick_test", vec!["--template", "quick-test"]),
        (
            "from_checkpoint_v5_12_4",
            vec![
                "--template",
                "from-checkpoint",
                "--from",
                "checkpoints/v5_12_4/best_Q.pt",
            ],
        ),
        (
            "from_checkpoint_v5_5",
            vec![
                "--template",
                "from-checkpoint",
                "--from",
                "checkpoints/v5_5/latest.pt",
            ],
        ),
    ] {
        let out = format!("{name}.yaml");
        let mut a = vec!["init"];
        a.extend(&args);
        a.extend(["-o", &out]);
        let o = tvck_in(dir, &a);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", run_text(&o, &[]));
        snap_run_in(&format!("init_{name}"), &o, dir);
        let text = std::fs::read_to_string(dir.join(&out)).unwrap();
        assert_commented(&text);
        let c = tvck_in(dir, &["check", &out]);
        assert_eq!(c.status.code(), Some(0), "{name}: {}", run_text(&c, &[]));
        snap_run_in(&format!("init_{name}_check"), &c, dir);
        // Every key is one tvck models.
        let strict = tvck_in(dir, &["check", "--strict", &out]);
        assert_eq!(strict.status.code(), Some(0), "{name} --strict");
        assert!(
            !String::from_utf8_lossy(&strict.stdout).contains("not part of the config schema"),
            "{name}: keys tvck does not model"
        );
    }
    // The from-checkpoint configs start from the named file; production and quick-test
    // from the checkpoint `tvck select` ranks best for them.
    let frozen = |f: &str| {
        let y: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
        y["frozen_checkpoint"]["path"].as_str().unwrap().to_string()
    };
    assert_eq!(
        frozen("from_checkpoint_v5_5.yaml"),
        "checkpoints/v5_5/latest.pt"
    );
    for (config, template) in [
        ("production.yaml", "production"),
        ("quick_test.yaml", "quick-test"),
    ] {
        let s = tvck_in(dir, &["select", "--json", "--for", config, "checkpoints"]);
        assert_eq!(s.status.code(), Some(0), "{template}");
        let sel: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
        assert_eq!(
            sel["selected"]["path"].as_str().unwrap(),
            frozen(config),
            "{template}: init and select agree"
        );
    }
}

#[test]
fn json_report() {
    let t = workspace();
    let o = tvck_in(
        t.path(),
        &["init", "--template", "quick-test", "-o", "q.yaml", "--json"],
    );
    assert_eq!(o.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["template"], "quick-test");
    assert_eq!(j["out"], "q.yaml");
    assert_eq!(j["model_class"], "TernaryVAEV5_11");
    assert_eq!(j["version"], "v5_11");
    assert_eq!(j["errors"], 0);
    assert_eq!(j["from_index"], false);
    assert!(j["candidates"].as_u64().unwrap() >= 1);
    assert!(j["frozen_checkpoint"]
        .as_str()
        .unwrap()
        .starts_with("checkpoints/"));
}

#[test]
fn refusals() {
    let t = workspace();
    let dir = t.path();
    // An existing output is never replaced without --force, and stays as it was.
    std::fs::write(dir.join("mine.yaml"), "# my config\n").unwrap();
    let o = tvck_in(
        dir,
        &["init", "--template", "production", "-o", "mine.yaml"],
    );
    snap_run_in("init_refuses_existing_output", &o, dir);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(dir.join("mine.yaml")).unwrap(),
        "# my config\n"
    );
    // --force replaces it, atomically (no temporary file left).
    let o = tvck_in(
        dir,
        &[
            "init",
            "--template",
            "production",
            "-o",
            "mine.yaml",
            "--force",
        ],
    );
    assert_eq!(o.status.code(), Some(0));
    assert!(std::fs::read_to_string(dir.join("mine.yaml"))
        .unwrap()
        .contains("TernaryVAEV5_11_PartialFreeze"));
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());

    // from-checkpoint needs --from; the others refuse it.
    let o = tvck_in(
        dir,
        &["init", "--template", "from-checkpoint", "-o", "f.yaml"],
    );
    snap_run_in("init_refuses_from_checkpoint_without_from", &o, dir);
    assert_eq!(o.status.code(), Some(2));
    let o = tvck_in(
        dir,
        &[
            "init",
            "--template",
            "quick-test",
            "--from",
            "checkpoints/v5_5/latest.pt",
            "-o",
            "f.yaml",
        ],
    );
    snap_run_in("init_refuses_from_with_quick_test", &o, dir);
    assert_eq!(o.status.code(), Some(2));
    // The output is never the checkpoint it starts from, even with --force.
    let ck = dir.join("checkpoints/v5_5/latest.pt");
    let before = std::fs::read(&ck).unwrap();
    let o = tvck_in(
        dir,
        &[
            "init",
            "--template",
            "from-checkpoint",
            "--from",
            "checkpoints/v5_5/latest.pt",
            "-o",
            "checkpoints/v5_5/latest.pt",
            "--force",
        ],
    );
    snap_run_in("init_refuses_output_equal_to_from", &o, dir);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(&ck).unwrap(), before);
    // An unsafe checkpoint is not started from.
    std::fs::copy(
        root().join("tests/fixtures/hostile/os_system.pt"),
        dir.join("evil.pt"),
    )
    .unwrap();
    let o = tvck_in(
        dir,
        &[
            "init",
            "--template",
            "from-checkpoint",
            "--from",
            "evil.pt",
            "-o",
            "f.yaml",
        ],
    );
    snap_run_in("init_refuses_unsafe_from", &o, dir);
    assert_eq!(o.status.code(), Some(1));
    assert!(!dir.join("f.yaml").exists());
    // A --from that does not exist: usage.
    let o = tvck_in(
        dir,
        &[
            "init",
            "--template",
            "from-checkpoint",
            "--from",
            "nope.pt",
            "-o",
            "f.yaml",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn no_fitting_checkpoint_is_an_error_with_a_hint() {
    // Nothing to choose from at all.
    let empty = tempfile::tempdir().unwrap();
    let o = tvck_in(
        empty.path(),
        &["init", "--template", "production", "-o", "p.yaml"],
    );
    snap_run_in("init_no_checkpoint_at_all", &o, empty.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(!empty.path().join("p.yaml").exists());
    // Only a v5.12.4 checkpoint: quick-test's TernaryVAEV5_11 loads v5.5 and v5.11 ones.
    let t = tempfile::tempdir().unwrap();
    copy_dir(
        &root().join("checkpoints/v5_12_4"),
        &t.path().join("checkpoints/v5_12_4"),
    );
    let o = tvck_in(
        t.path(),
        &["init", "--template", "quick-test", "-o", "q.yaml"],
    );
    snap_run_in("init_quick_test_only_v5_12_4", &o, t.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(!t.path().join("q.yaml").exists());
    // --checkpoint-root adds a folder to search.
    let o = tvck_in(
        empty.path(),
        &[
            "init",
            "--template",
            "quick-test",
            "--checkpoint-root",
            root().join("checkpoints").to_str().unwrap(),
            "-o",
            "q.yaml",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", run_text(&o, &[]));
    let c = tvck_in(empty.path(), &["check", "q.yaml"]);
    assert_eq!(c.status.code(), Some(0), "{}", run_text(&c, &[]));
}
