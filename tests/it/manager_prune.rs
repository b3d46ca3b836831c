//! Keep-rules and prune (library): one test per protection, the audit table; aliases;
//! lineage of the v5.5 → v5.11 frozen parts and of a converted file.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tvck::manager::index::{Index, IndexOptions};
use tvck::manager::keep::Rules;
use tvck::manager::prune::{self, Action, PrunePlan};

use crate::common;

use common::root;

fn set_mtime(p: &Path, secs: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// `run/a.pt` … `run/d.pt`: the same v5.12.4 checkpoint four times, oldest first.
fn run_tree() -> (tempfile::TempDir, PathBuf, Index) {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("run")).unwrap();
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        let p = tree.join(format!("run/{n}.pt"));
        std::fs::copy(root().join("checkpoints/v5_12_4/best_Q.pt"), &p).unwrap();
        set_mtime(&p, 1_000_000 + i as u64 * 1000);
    }
    let index = Index::open(&dir.path().join("index.sqlite"), &IndexOptions::default()).unwrap();
    (dir, tree, index)
}

fn plan(index: &mut Index, tree: &Path, rules: &str) -> PrunePlan {
    prune::plan(index, tree, &Rules::parse(rules).unwrap()).unwrap()
}

fn actions(p: &PrunePlan) -> Vec<(String, Action, Vec<String>)> {
    p.rows
        .iter()
        .map(|r| (r.file.clone(), r.action, r.reasons.clone()))
        .collect()
}

fn row<'a>(p: &'a PrunePlan, file: &str) -> &'a prune::PlanRow {
    p.rows
        .iter()
        .find(|r| r.file == file)
        .unwrap_or_else(|| panic!("no {file}"))
}

#[test]
fn rules_alone_delete_all_but_the_kept_and_audit_each_deletion() {
    let (_d, tree, mut index) = run_tree();
    let p = plan(&mut index, &tree, "latest:1");
    let acts = actions(&p);
    assert_eq!(
        acts.iter()
            .map(|(f, a, _)| (f.as_str(), *a))
            .collect::<Vec<_>>(),
        [
            ("run/a.pt", Action::Delete),
            ("run/b.pt", Action::Delete),
            ("run/c.pt", Action::Delete),
            ("run/d.pt", Action::Keep),
        ]
    );
    assert_eq!(row(&p, "run/d.pt").reasons, ["latest:1"]);
    assert_eq!((p.keep, p.delete), (1, 3));
    assert_eq!(p.reclaimed, 3 * row(&p, "run/a.pt").bytes);
    // A dry run deletes nothing.
    assert!(tree.join("run/a.pt").exists());
    let done = prune::apply(&mut index, &p, |_| {}).unwrap();
    assert_eq!((done.deleted, done.skipped), (3, 0));
    for f in ["a", "b", "c"] {
        assert!(!tree.join(format!("run/{f}.pt")).exists());
    }
    assert!(tree.join("run/d.pt").exists());
    let audit = index.prune_audit().unwrap();
    assert_eq!(audit.len(), 3);
    assert!(audit
        .iter()
        .all(|a| a.outcome == "deleted" && a.rule == "not kept by latest:1"));
    assert!(audit[0].path.ends_with("run/a.pt") && audit[0].fingerprint.is_some());
    // The index no longer lists them.
    assert_eq!(index.entries(std::slice::from_ref(&tree)).unwrap().len(), 1);
}

#[test]
fn protection_frozen_checkpoint_named_by_a_config() {
    let (_d, tree, mut index) = run_tree();
    // Relative to a working directory tvck does not know, and relative to the config.
    std::fs::write(
        tree.join("train.yaml"),
        "model:\n  name: TernaryVAEV5_11_PartialFreeze\nfrozen_checkpoint:\n  path: run/b.pt\n",
    )
    .unwrap();
    std::fs::create_dir_all(tree.join("configs")).unwrap();
    std::fs::write(
        tree.join("configs/other.yaml"),
        "frozen_checkpoint:\n  path: ../run/a.pt\n  encoder_to_load: both\n",
    )
    .unwrap();
    let p = plan(&mut index, &tree, "latest:1");
    assert_eq!(row(&p, "run/b.pt").action, Action::Keep);
    assert_eq!(
        row(&p, "run/b.pt").reasons,
        ["frozen_checkpoint of train.yaml"]
    );
    assert!(row(&p, "run/b.pt").protected);
    assert_eq!(
        row(&p, "run/a.pt").reasons,
        ["frozen_checkpoint of configs/other.yaml"]
    );
    assert_eq!(row(&p, "run/c.pt").action, Action::Delete);
    prune::apply(&mut index, &p, |_| {}).unwrap();
    assert!(tree.join("run/a.pt").exists() && tree.join("run/b.pt").exists());
    assert!(!tree.join("run/c.pt").exists());
}

#[test]
fn protection_alias() {
    let (_d, tree, mut index) = run_tree();
    index
        .update(std::slice::from_ref(&tree), |_| {}, |_| {})
        .unwrap();
    index.tag(&tree.join("run/a.pt"), "production").unwrap();
    let p = plan(&mut index, &tree, "latest:1");
    assert_eq!(row(&p, "run/a.pt").reasons, ["alias production"]);
    prune::apply(&mut index, &p, |_| {}).unwrap();
    assert!(tree.join("run/a.pt").exists());
    assert!(!tree.join("run/b.pt").exists());
}

#[test]
fn protection_lineage_origin_of_a_kept_file() {
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
    let mut index = Index::open(&dir.path().join("i.sqlite"), &IndexOptions::default()).unwrap();
    let p = plan(&mut index, &tree, "latest:1");
    assert_eq!(row(&p, "run/v5_11.pt").reasons, ["latest:1"]);
    let o = row(&p, "run/v5_5.pt");
    assert_eq!(o.action, Action::Keep);
    assert_eq!(
        o.reasons,
        [
            "lineage: origin of decoder_A of kept run/v5_11.pt",
            "lineage: origin of encoder_A of kept run/v5_11.pt",
            "lineage: origin of encoder_B of kept run/v5_11.pt",
        ]
    );
    // A kept copy of the origin's weights elsewhere: the lineage survives without it.
    std::fs::create_dir_all(tree.join("archive")).unwrap();
    let copy = tree.join("archive/v5_5_copy.pt");
    std::fs::copy(&origin, &copy).unwrap();
    set_mtime(&copy, 500_000);
    let p = plan(&mut index, &tree, "latest:1");
    assert_eq!(row(&p, "archive/v5_5_copy.pt").reasons, ["latest:1"]);
    assert_eq!(row(&p, "run/v5_5.pt").action, Action::Delete);
}

#[test]
fn protection_changed_or_tagged_since_the_plan() {
    let (d, tree, mut index) = run_tree();
    let p = plan(&mut index, &tree, "latest:1");
    let db = d.path().join("index.sqlite");
    let b = tree.join("run/b.pt");
    let c = tree.join("run/c.pt");
    let done = prune::apply(&mut index, &p, |r| {
        if r.file == "run/a.pt" {
            // Between the plan and the deletion: b is rewritten, c is tagged.
            let mut bytes = std::fs::read(&b).unwrap();
            bytes.extend_from_slice(b"more");
            std::fs::write(&b, bytes).unwrap();
            let mut other = Index::open(&db, &IndexOptions::default()).unwrap();
            other.tag(&c, "keep-me").unwrap();
        }
    })
    .unwrap();
    let outcomes: Vec<(&str, &str)> = done
        .deletions
        .iter()
        .map(|d| (d.file.as_str(), d.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("run/a.pt", "deleted"),
            ("run/b.pt", "skipped: changed since the plan"),
            ("run/c.pt", "skipped: tagged keep-me since the plan"),
        ]
    );
    assert!(b.exists() && c.exists());
    let audit: Vec<String> = index
        .prune_audit()
        .unwrap()
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(
        audit,
        [
            "deleted",
            "skipped: changed since the plan",
            "skipped: tagged keep-me since the plan"
        ]
    );
}

#[test]
fn protection_unreadable_files_are_not_managed() {
    let (_d, tree, mut index) = run_tree();
    std::fs::copy(
        root().join("tests/fixtures/hostile/truncated.pt"),
        tree.join("run/broken.pt"),
    )
    .unwrap();
    std::fs::copy(
        root().join("tests/fixtures/hostile/os_system.pt"),
        tree.join("run/evil.pt"),
    )
    .unwrap();
    let p = plan(&mut index, &tree, "latest:1");
    assert_eq!(
        row(&p, "run/broken.pt").reasons,
        ["unreadable: not managed"]
    );
    assert_eq!(row(&p, "run/evil.pt").reasons, ["unsafe: not managed"]);
}

#[test]
fn aliases_move_follow_renames_and_keep_history() {
    let (_d, tree, mut index) = run_tree();
    index
        .update(std::slice::from_ref(&tree), |_| {}, |_| {})
        .unwrap();
    let a = tree.join("run/a.pt");
    let b = tree.join("run/b.pt");
    assert_eq!(index.tag(&a, "production").unwrap().action, "tag");
    let moved = index.tag(&b, "production").unwrap();
    assert_eq!(moved.action, "move");
    assert!(moved.previous.unwrap().ends_with("run/a.pt"));
    let err = index.tag(&tree.join("run/none.pt"), "x").unwrap_err();
    assert!(err.to_string().contains("not in the index"), "{err}");
    assert!(index.tag(&a, "bad name").is_err());
    // A renamed file keeps its alias.
    std::fs::rename(&b, tree.join("run/b2.pt")).unwrap();
    assert_eq!(
        index
            .update(std::slice::from_ref(&tree), |_| {}, |_| {})
            .unwrap()
            .renamed,
        1
    );
    let aliases = index.aliases().unwrap();
    assert_eq!(aliases.len(), 1);
    assert!(aliases[0].path.ends_with("run/b2.pt"));
    let e = index.entries(std::slice::from_ref(&tree)).unwrap();
    let with: Vec<&str> = e
        .iter()
        .filter(|e| e.aliases.contains(&"production".to_string()))
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(with.len(), 1);
    assert!(with[0].ends_with("run/b2.pt"));
    let q = tvck::manager::Query::parse("alias == production").unwrap();
    assert_eq!(e.iter().filter(|x| q.matches(*x)).count(), 1);
    index.untag("production").unwrap();
    let err = index.untag("production").unwrap_err();
    assert!(err.to_string().contains("no alias `production`"));
    let history: Vec<String> = index
        .alias_history()
        .unwrap()
        .into_iter()
        .map(|h| h.action)
        .collect();
    assert_eq!(history, ["tag", "move", "untag"]);
}

#[test]
fn lineage_of_the_frozen_v5_5_parts_and_of_a_converted_file() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("checkpoints");
    common::copy_dir(&root().join("checkpoints"), &tree);
    set_mtime(&tree.join("v5_5/latest.pt"), 1_000_000);
    set_mtime(&tree.join("v5_11/best.pt"), 2_000_000);
    let o = common::tvck(
        &[
            "convert",
            "checkpoints/v5_11/best.pt",
            "--to",
            "v5_12_4",
            "-o",
            "checkpoints/converted/best.pt",
        ],
        dir.path(),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut index = Index::open(&dir.path().join("i.sqlite"), &IndexOptions::default()).unwrap();
    index
        .update(std::slice::from_ref(&tree), |_| {}, |_| {})
        .unwrap();

    let l = tvck::manager::lineage::lineage(&index, &tree.join("v5_11/best.pt")).unwrap();
    let part = |name: &str| l.parts.iter().find(|p| p.part == name).unwrap();
    for frozen in ["encoder_A", "encoder_B", "decoder_A"] {
        let p = part(frozen);
        let first = &p.holders[0];
        assert!(
            first.path.ends_with("v5_5/latest.pt"),
            "{frozen}: {:?}",
            p.holders
        );
        assert!(first.older);
        assert_eq!(first.version.as_deref(), Some("v5_5"));
    }
    // The v5_5 early run trained its own encoder: it is nowhere in v5.11's lineage.
    assert!(l
        .parts
        .iter()
        .all(|p| p.holders.iter().all(|h| !h.path.contains("v5_5_early"))));
    assert!(l.migration.is_none());

    let c = tvck::manager::lineage::lineage(&index, &tree.join("converted/best.pt")).unwrap();
    let m = c.migration.as_ref().unwrap();
    assert_eq!(m.from_version.as_deref(), Some("v5_11"));
    assert_eq!(m.to_version.as_deref(), Some("v5_12_4"));
    assert_eq!(m.specs, ["v5_11_to_v5_12_4"]);
    assert_eq!(m.metrics.as_deref(), Some("not_measured"));
    // Parts the conversion copied byte for byte lead back to the source (and its origin).
    let enc = c.parts.iter().find(|p| p.part == "encoder_A").unwrap();
    let holders: Vec<&str> = enc.holders.iter().map(|h| h.path.as_str()).collect();
    assert!(
        holders.iter().any(|h| h.ends_with("v5_11/best.pt")),
        "{holders:?}"
    );

    let dot = tvck::manager::lineage::dot(&index, std::slice::from_ref(&tree)).unwrap();
    assert!(dot.starts_with("digraph lineage {"));
    assert!(dot.contains("converted by v5_11_to_v5_12_4"), "{dot}");
    assert!(dot.contains("decoder_A, encoder_A, encoder_B"), "{dot}");
}
