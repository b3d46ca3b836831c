//! Non-regular files given to each command: a FIFO named like a checkpoint must never
//! be opened for reading (opening a FIFO blocks until a writer comes). Every command runs
//! under a timeout here: a hang fails the test instead of blocking it.
#![cfg(unix)]

use crate::common;

use common::{mkfifo, root, tvck_within};

const LIMIT_S: u64 = 20;

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join("x.pt"));
    // A config whose frozen checkpoint is the FIFO.
    let cfg =
        std::fs::read_to_string(root().join("tests/fixtures/configs/train_v5_12_4_partial.yaml"))
            .unwrap()
            .replace("path: ../../../checkpoints/v5_12_4/best_Q.pt", "path: x.pt");
    assert!(cfg.contains("path: x.pt"));
    std::fs::write(dir.path().join("cfg.yaml"), cfg).unwrap();
    dir
}

fn run(args: &[&str], cwd: &std::path::Path) -> (Option<i32>, String, String) {
    let o = tvck_within(args, cwd, LIMIT_S)
        .unwrap_or_else(|| panic!("`tvck {}` hung on a FIFO", args.join(" ")));
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn inspect_refuses_a_fifo_without_blocking() {
    let ws = workspace();
    for args in [vec!["inspect", "x.pt"], vec!["inspect", "x.pt", "--json"]] {
        let (code, _, err) = run(&args, ws.path());
        assert_eq!(code, Some(1), "{args:?}");
        assert!(
            err.contains("x.pt: not a checkpoint: not a regular file (a FIFO)"),
            "{err}"
        );
    }
}

#[test]
fn diff_refuses_a_fifo_on_either_side_without_blocking() {
    let ws = workspace();
    let sample = root().join("checkpoints/v5_11/best.pt");
    let sample = sample.to_str().unwrap();
    for args in [
        vec!["diff", "x.pt", sample],
        vec!["diff", sample, "x.pt"],
        vec!["diff", "x.pt", "--arch", "v5_11"],
    ] {
        let (code, _, err) = run(&args, ws.path());
        assert_eq!(code, Some(1), "{args:?}");
        assert!(
            err.contains("x.pt: not a checkpoint: not a regular file (a FIFO)"),
            "{err}"
        );
    }
}

#[test]
fn check_reports_a_fifo_frozen_checkpoint_without_blocking() {
    let ws = workspace();
    let (code, out, _) = run(&["check", "cfg.yaml"], ws.path());
    assert_eq!(code, Some(1));
    assert!(out.contains("FAIL cfg.yaml"), "{out}");
    assert!(
        out.contains("cannot read the frozen checkpoint: x.pt: not a checkpoint: not a regular file (a FIFO)"),
        "{out}"
    );
    let (code, out, _) = run(&["check", "cfg.yaml", "--json"], ws.path());
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v.to_string().contains("not a regular file (a FIFO)"), "{v}");
    // --auto-fix searches the folder, which holds the FIFO: it is not opened either.
    let (code, out, _) = run(&["check", "cfg.yaml", "--auto-fix"], ws.path());
    assert_eq!(code, Some(1));
    assert!(out.contains("No compatible checkpoint found"), "{out}");
}

#[test]
fn scan_lists_a_fifo_as_skipped_without_blocking() {
    let ws = workspace();
    // In a folder the FIFO is listed as skipped (exit 0); named on the command line, the
    // file asked for was not read (exit 1).
    for (target, want) in [(".", 0), ("x.pt", 1)] {
        let (code, out, _) = run(&["scan", target], ws.path());
        assert_eq!(code, Some(want), "{target}: nothing read");
        assert!(out.contains("Skipped:\n  x.pt: a FIFO, not read"), "{out}");
        assert!(out.contains("0 checkpoints"), "{out}");
    }
}
