//! File-system faults while writing (issue 14): a full disk leaves the old file intact and
//! says so; two writers of one OUT never leave a mix; a config that is a link is not
//! replaced by `--auto-fix --write`.
//!
//! The full-disk tests mount a small tmpfs ([`common::Tmpfs`]: root, as CI runs).

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{copy_dir, root, tvck, Tmpfs};

/// The files of `dir` whose names are not in `expected`.
fn others(dir: &Path, expected: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !expected.contains(&n.as_str()))
        .collect()
}

fn convert(input: &Path, out: &Path, force: bool) -> std::process::Output {
    let mut args = vec![
        "convert",
        input.to_str().unwrap(),
        "--to",
        "v5_12_4",
        "-o",
        out.to_str().unwrap(),
    ];
    if force {
        args.push("--force");
    }
    tvck(&args, &root())
}

#[test]
fn convert_on_a_full_disk_leaves_the_old_output_intact() {
    let Some(fs) = Tmpfs::new(640) else { return };
    let input = root().join("checkpoints/v5_11/best.pt");
    let out = fs.path().join("out.pt");
    assert_eq!(convert(&input, &out, false).status.code(), Some(0));
    let before = std::fs::read(&out).unwrap();
    fs.fill();
    let o = convert(
        &root().join("checkpoints/v5_11_homeostasis/best.pt"),
        &out,
        true,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "the old output changed"
    );
    assert_eq!(
        others(fs.path(), &["out.pt", "filler"]),
        Vec::<String>::new()
    );
}

#[test]
fn auto_fix_write_on_a_full_disk_leaves_the_config_intact() {
    let Some(fs) = Tmpfs::new(6 * 1024) else {
        return;
    };
    copy_dir(&root().join("checkpoints"), &fs.path().join("checkpoints"));
    std::fs::create_dir(fs.path().join("configs")).unwrap();
    let cfg = fs.path().join("configs/D.yaml");
    std::fs::copy(
        root().join("tests/fixtures/upstream-configs/v5_12_5_relaxed_D_from_scratch.yaml"),
        &cfg,
    )
    .unwrap();
    let before = std::fs::read(&cfg).unwrap();
    fs.fill();
    let o = tvck(
        &["check", "configs/D.yaml", "--auto-fix", "--write"],
        fs.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("left as it was"), "{err}");
    assert!(err.contains("hint: free some space"), "{err}");
    assert_eq!(std::fs::read(&cfg).unwrap(), before);
    assert_eq!(
        others(&fs.path().join("configs"), &["D.yaml"]),
        Vec::<String>::new()
    );
}

/// The weights fingerprint and the number of tensors of a file, through `tvck inspect`
/// (which fails on a file that is not whole).
fn identity(path: &Path) -> (String, usize) {
    let o = tvck(&["inspect", path.to_str().unwrap(), "--json"], &root());
    assert_eq!(o.status.code(), Some(0), "{}", path.display());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (
        j["fingerprint"].as_str().unwrap().to_string(),
        j["tensors"].as_array().unwrap().len(),
    )
}

/// Two converts racing to one OUT: the file left is one writer's whole output (its
/// weights, its size), never a mix, and no temporary file stays. (The bytes differ from
/// run to run by the migration record's time.)
#[test]
fn two_writers_of_one_output_never_leave_a_mix() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [
        root().join("checkpoints/v5_11/best.pt"),
        root().join("checkpoints/v5_11_homeostasis/best.pt"),
    ];
    let whole: Vec<((String, usize), u64)> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let out = dir.path().join(format!("ref{i}.pt"));
            assert_eq!(convert(input, &out, false).status.code(), Some(0));
            (identity(&out), std::fs::metadata(&out).unwrap().len())
        })
        .collect();
    assert_ne!(whole[0], whole[1]);
    let out = dir.path().join("out.pt");
    for round in 0..4 {
        let children: Vec<std::process::Child> = inputs
            .iter()
            .map(|input| {
                Command::new(env!("CARGO_BIN_EXE_tvck"))
                    .args(["convert", input.to_str().unwrap(), "--to", "v5_12_4", "-o"])
                    .arg(&out)
                    .arg("--force")
                    .current_dir(root())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "round {round}");
        }
        let got = (identity(&out), std::fs::metadata(&out).unwrap().len());
        assert!(got == whole[0] || got == whole[1], "round {round}: a mix");
    }
    assert_eq!(
        others(dir.path(), &["ref0.pt", "ref1.pt", "out.pt"]),
        Vec::<String>::new()
    );
}

/// `--auto-fix --write` on a config that is a symbolic link or has hard links: refused,
/// nothing written (no backup either), the hint names the file to fix.
#[cfg(unix)]
#[test]
fn auto_fix_write_does_not_replace_a_linked_config() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("checkpoints"), &dir.path().join("checkpoints"));
    std::fs::create_dir(dir.path().join("configs")).unwrap();
    let real = dir.path().join("real.yaml");
    std::fs::copy(
        root().join("tests/fixtures/upstream-configs/v5_12_5_relaxed_D_from_scratch.yaml"),
        &real,
    )
    .unwrap();
    let before = std::fs::read(&real).unwrap();
    std::os::unix::fs::symlink("../real.yaml", dir.path().join("configs/soft.yaml")).unwrap();
    std::fs::hard_link(&real, dir.path().join("configs/hard.yaml")).unwrap();
    for (name, want, hint) in [
        (
            "configs/soft.yaml",
            "configs/soft.yaml is a symbolic link to ../real.yaml: not replaced",
            "hint: fix the file the link points to instead: ../real.yaml",
        ),
        (
            "configs/hard.yaml",
            "configs/hard.yaml has 2 names (hard links): not replaced",
            "hint: fix one name's copy by hand",
        ),
    ] {
        let o = tvck(&["check", name, "--auto-fix", "--write"], dir.path());
        assert_eq!(o.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{err}");
        assert!(err.contains(hint), "{err}");
    }
    assert_eq!(std::fs::read(&real).unwrap(), before);
    let mut left = others(&dir.path().join("configs"), &[]);
    left.sort();
    assert_eq!(left, ["hard.yaml", "soft.yaml"]);
    assert!(
        std::fs::symlink_metadata(dir.path().join("configs/soft.yaml"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}
