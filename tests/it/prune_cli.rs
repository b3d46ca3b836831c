//! `tvck prune` through the binary, on temporary copies of checkpoints/: a dry run deletes
//! nothing, `--apply` deletes exactly the plan (and audits it), one test per protection,
//! snapshots of exit code, stdout and stderr.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use tvck::manager::index::{Index, IndexOptions};

use crate::common;

use common::root;

fn set_mtime(p: &Path, secs: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// `tree/run/a.pt` … `tree/run/d.pt`: v5.12.4's best_Q.pt four times, oldest first.
fn run_tree() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("run")).unwrap();
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        let p = tree.join(format!("run/{n}.pt"));
        std::fs::copy(root().join("checkpoints/v5_12_4/best_Q.pt"), &p).unwrap();
        set_mtime(&p, 1_000_000 + i as u64 * 1000);
    }
    (dir, tree)
}

/// `tvck prune tree ARGS --index DIR/index.sqlite`, run in DIR.
fn prune(dir: &Path, args: &[&str]) -> Output {
    let index = dir.join("index.sqlite");
    let mut all = vec!["prune", "tree"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--index", index.to_str().unwrap()]);
    common::tvck(&all, dir)
}

/// Exit code, stdout and stderr, the temporary folder written `[TMP]`.
fn transcript(o: &Output, dir: &Path) -> String {
    let canon = dir.canonicalize().unwrap();
    let clean = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .replace(canon.to_str().unwrap(), "[TMP]")
            .replace(dir.to_str().unwrap(), "[TMP]")
    };
    format!(
        "exit code: {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        clean(&o.stdout),
        clean(&o.stderr)
    )
}

fn json(o: &Output) -> serde_json::Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// (file, action, reasons) of a JSON plan.
fn rows(v: &serde_json::Value) -> Vec<(String, String, Vec<String>)> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["file"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
                r["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn reasons_of(v: &serde_json::Value, file: &str) -> Vec<String> {
    rows(v)
        .into_iter()
        .find(|(f, _, _)| f == file)
        .unwrap_or_else(|| panic!("no {file} in the plan"))
        .2
}

/// Every file under `tree`, relative.
fn files(tree: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(tree)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| tvck::discover::relative(tree, e.path()))
        .collect()
}

#[test]
fn dry_run_deletes_nothing() {
    let (d, tree) = run_tree();
    let before = files(&tree);
    let o = prune(d.path(), &["--keep", "latest:1"]);
    snap!("prune_dry_run", transcript(&o, d.path()));
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(files(&tree), before);
    let v = json(&prune(d.path(), &["--keep", "latest:1", "--json"]));
    assert_eq!(v["dry_run"], true);
    assert!(v.get("applied").is_none());
    assert_eq!(
        (v["keep"].as_u64(), v["delete"].as_u64()),
        (Some(1), Some(3))
    );
    let size = std::fs::metadata(tree.join("run/a.pt")).unwrap().len();
    assert_eq!(v["reclaimed"].as_u64(), Some(3 * size));
    assert_eq!(files(&tree), before);
}

#[test]
fn apply_deletes_exactly_the_plan_and_audits_it() {
    let (d, tree) = run_tree();
    let plan = json(&prune(d.path(), &["--keep", "latest:2", "--json"]));
    let planned: BTreeSet<String> = rows(&plan)
        .into_iter()
        .filter(|(_, a, _)| a == "delete")
        .map(|(f, _, _)| f)
        .collect();
    assert_eq!(
        planned,
        BTreeSet::from(["run/a.pt".to_string(), "run/b.pt".to_string()])
    );
    let before = files(&tree);
    let o = prune(d.path(), &["--keep", "latest:2", "--apply"]);
    snap!("prune_apply", transcript(&o, d.path()));
    assert_eq!(o.status.code(), Some(0));
    let after = files(&tree);
    let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert_eq!(gone, planned);
    let index = Index::open(&d.path().join("index.sqlite"), &IndexOptions::default()).unwrap();
    let audit = index.prune_audit().unwrap();
    let audited: BTreeSet<String> = audit
        .iter()
        .map(|a| tvck::discover::relative(&tree.canonicalize().unwrap(), Path::new(&a.path)))
        .collect();
    assert_eq!(audited, planned);
    assert!(audit
        .iter()
        .all(|a| a.outcome == "deleted" && a.rule == "not kept by latest:2"));
    // Again: nothing left to delete.
    let v = json(&prune(
        d.path(),
        &["--keep", "latest:2", "--apply", "--json"],
    ));
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["applied"]["deleted"], 0);
    assert_eq!(files(&tree), after);
}

#[test]
fn protection_frozen_checkpoint_named_by_a_config_under_the_root() {
    let (d, tree) = run_tree();
    std::fs::create_dir_all(tree.join("configs")).unwrap();
    std::fs::write(
        tree.join("configs/partial.yaml"),
        "model:\n  name: TernaryVAEV5_11_PartialFreeze\nfrozen_checkpoint:\n  path: ../run/b.pt\n  encoder_to_load: both\n",
    )
    .unwrap();
    let o = prune(d.path(), &["--keep", "latest:1", "--apply"]);
    snap!("prune_protection_frozen", transcript(&o, d.path()));
    assert_eq!(o.status.code(), Some(0));
    assert!(tree.join("run/b.pt").exists());
    assert!(!tree.join("run/a.pt").exists() && !tree.join("run/c.pt").exists());
    let v = json(&prune(d.path(), &["--keep", "latest:1", "--json"]));
    assert_eq!(
        reasons_of(&v, "run/b.pt"),
        ["frozen_checkpoint of configs/partial.yaml"]
    );
}

#[test]
fn protection_alias() {
    let (d, tree) = run_tree();
    let mut index = Index::open(&d.path().join("index.sqlite"), &IndexOptions::default()).unwrap();
    index
        .update(std::slice::from_ref(&tree), |_| {}, |_| {})
        .unwrap();
    index.tag(&tree.join("run/a.pt"), "production").unwrap();
    drop(index);
    let o = prune(d.path(), &["--keep", "latest:1", "--apply", "--json"]);
    let v = json(&o);
    assert_eq!(reasons_of(&v, "run/a.pt"), ["alias production"]);
    assert!(tree.join("run/a.pt").exists());
    assert!(!tree.join("run/b.pt").exists());
    let done: Vec<&str> = v["applied"]["deletions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["file"].as_str().unwrap())
        .collect();
    assert_eq!(done, ["run/b.pt", "run/c.pt"]);
}

#[test]
fn protection_only_holder_of_a_kept_files_lineage_origin() {
    // v5.11's encoder_A, encoder_B and decoder_A are v5.5's bytes (frozen from it).
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("run")).unwrap();
    let origin = tree.join("run/v5_5.pt");
    let kept = tree.join("run/v5_11.pt");
    std::fs::copy(root().join("checkpoints/v5_5/latest.pt"), &origin).unwrap();
    std::fs::copy(root().join("checkpoints/v5_11/best.pt"), &kept).unwrap();
    set_mtime(&origin, 1_000_000);
    set_mtime(&kept, 2_000_000);
    let o = prune(dir.path(), &["--keep", "latest:1", "--apply"]);
    snap!("prune_protection_lineage", transcript(&o, dir.path()));
    assert_eq!(o.status.code(), Some(0));
    assert!(origin.exists() && kept.exists());
    // A kept copy of the origin elsewhere: then the origin itself may go.
    std::fs::create_dir_all(tree.join("archive")).unwrap();
    let copy = tree.join("archive/v5_5_copy.pt");
    std::fs::copy(&origin, &copy).unwrap();
    let v = json(&prune(
        dir.path(),
        &["--keep", "latest:1", "--apply", "--json"],
    ));
    assert_eq!(reasons_of(&v, "archive/v5_5_copy.pt"), ["latest:1"]);
    assert!(!origin.exists() && copy.exists() && kept.exists());
}

#[test]
fn protection_changed_since_the_plan() {
    let (d, tree) = run_tree();
    // The reviewed plan (a dry run's JSON), then b is rewritten, then the plan is applied.
    let o = prune(d.path(), &["--keep", "latest:1", "--json"]);
    let plan = d.path().join("plan.json");
    std::fs::write(&plan, &o.stdout).unwrap();
    let b = tree.join("run/b.pt");
    let mut bytes = std::fs::read(&b).unwrap();
    bytes.extend_from_slice(b"more");
    std::fs::write(&b, bytes).unwrap();
    set_mtime(&b, 1_001_000);
    let o = prune(d.path(), &["--apply", "--plan", "plan.json"]);
    snap!("prune_protection_changed", transcript(&o, d.path()));
    assert_eq!(o.status.code(), Some(0));
    assert!(b.exists());
    assert!(!tree.join("run/a.pt").exists() && !tree.join("run/c.pt").exists());
    let index = Index::open(&d.path().join("index.sqlite"), &IndexOptions::default()).unwrap();
    let outcomes: Vec<String> = index
        .prune_audit()
        .unwrap()
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(
        outcomes,
        ["deleted", "skipped: changed since the plan", "deleted"]
    );
}

#[test]
fn a_saved_plan_never_deletes_what_a_fresh_plan_keeps() {
    let (d, tree) = run_tree();
    let o = prune(d.path(), &["--keep", "latest:1", "--json"]);
    std::fs::write(d.path().join("plan.json"), &o.stdout).unwrap();
    // After the plan, a config starts naming c.pt.
    std::fs::write(
        tree.join("train.yaml"),
        "frozen_checkpoint:\n  path: run/c.pt\n",
    )
    .unwrap();
    let v = json(&prune(
        d.path(),
        &["--apply", "--plan", "plan.json", "--json"],
    ));
    assert_eq!(
        reasons_of(&v, "run/c.pt"),
        ["frozen_checkpoint of train.yaml (since the plan)"]
    );
    assert!(tree.join("run/c.pt").exists());
    assert!(!tree.join("run/a.pt").exists() && !tree.join("run/b.pt").exists());
    // Other rules than the plan's, or a plan of another folder: usage errors.
    let o = prune(
        d.path(),
        &["--keep", "latest:3", "--apply", "--plan", "plan.json"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(common::stdout(&o).is_empty());
    std::fs::create_dir_all(d.path().join("other/tree")).unwrap();
    let o = common::tvck(
        &[
            "prune",
            "tree",
            "--apply",
            "--plan",
            "../plan.json",
            "--index",
            d.path().join("index.sqlite").to_str().unwrap(),
        ],
        &d.path().join("other"),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("the plan is for"));
}

#[test]
fn usage_errors() {
    let (d, tree) = run_tree();
    let before = files(&tree);
    let o = prune(d.path(), &[]);
    snap!("prune_no_rules", transcript(&o, d.path()));
    assert_eq!(o.status.code(), Some(2));
    let o = prune(d.path(), &["--keep", "best:speed:2", "--apply"]);
    snap!("prune_bad_rule", transcript(&o, d.path()));
    assert_eq!(o.status.code(), Some(2));
    // A rules file.
    std::fs::write(
        d.path().join("keep.yaml"),
        "keep:\n  - latest: 3\n  - every: 1000\n",
    )
    .unwrap();
    let v = json(&prune(d.path(), &["--keep-file", "keep.yaml", "--json"]));
    assert_eq!(v["rules"], serde_json::json!(["latest:3", "every:1000"]));
    assert_eq!(v["delete"], 1);
    assert_eq!(files(&tree), before);
}
