//! The checkpoint index (library): incremental re-index, concurrent indexers, corrupt and
//! foreign databases, scan from the index.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tvck::manager::index::{Index, IndexOptions, IndexReport};
use tvck::manager::ManagerError;

use crate::common;

use common::copy_dir;

fn discover(root: &Path) -> Vec<PathBuf> {
    tvck::discover::discover(root, tvck::discover::Walk::everything()).files
}

/// A copy of checkpoints/ in a temporary folder.
fn tree() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ckpts");
    copy_dir(&common::root().join("checkpoints"), &root);
    (dir, root)
}

fn update(index: &mut Index, root: &Path) -> IndexReport {
    index.update(&[root.to_path_buf()], |_| {}, |_| {}).unwrap()
}

fn counts(r: &IndexReport) -> [usize; 6] {
    [
        r.files,
        r.added,
        r.changed,
        r.renamed,
        r.removed,
        r.unchanged,
    ]
}

#[test]
fn incremental_reindex_after_add_change_rename_delete() {
    let (dir, root) = tree();
    let db = dir.path().join("cache/tvck/index.sqlite");
    let mut index = Index::open(&db, &IndexOptions::default()).unwrap();
    let first = update(&mut index, &root);
    assert_eq!(counts(&first), [8, 8, 0, 0, 0, 0]);
    assert_eq!(first.unreadable, 0);
    let again = update(&mut index, &root);
    assert_eq!(
        counts(&again),
        [8, 0, 0, 0, 0, 8],
        "nothing read the second time"
    );

    // Add one, change one (other bytes, other size), rename one, delete one.
    std::fs::copy(root.join("v5_11/best.pt"), root.join("v5_11/copy.pt")).unwrap();
    std::fs::copy(root.join("v5_5/latest.pt"), root.join("v5_12_4/best_Q.pt")).unwrap();
    std::fs::rename(
        root.join("v5_5_early/latest.pt"),
        root.join("v5_5_early/moved.pt"),
    )
    .unwrap();
    std::fs::remove_file(root.join("exports/v5_12_4_legacy.pt")).unwrap();
    let r = update(&mut index, &root);
    assert_eq!(counts(&r), [8, 1, 1, 1, 1, 5]);

    let entries = index.entries(std::slice::from_ref(&root)).unwrap();
    let canon = root.canonicalize().unwrap();
    let names: Vec<String> = entries
        .iter()
        .map(|e| {
            e.path
                .strip_prefix(&format!("{}/", canon.display()))
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "exports/v5_12_4.safetensors",
            "exports/v5_12_4_state_dict.pt",
            "v5_11/best.pt",
            "v5_11/copy.pt",
            "v5_11_homeostasis/best.pt",
            "v5_12_4/best_Q.pt",
            "v5_5/latest.pt",
            "v5_5_early/moved.pt",
        ]
    );
    // The changed file is read again: it now holds the v5.5 weights.
    let by = |n: &str| entries.iter().find(|e| e.path.ends_with(n)).unwrap();
    assert_eq!(
        by("v5_12_4/best_Q.pt").summary.fingerprint,
        by("v5_5/latest.pt").summary.fingerprint
    );
    assert_eq!(
        by("v5_11/copy.pt").summary.fingerprint,
        by("v5_11/best.pt").summary.fingerprint
    );
    assert_eq!(
        by("v5_12_4/best_Q.pt")
            .summary
            .version
            .as_ref()
            .unwrap()
            .version,
        "v5_5"
    );
    // Tensors follow their file: the renamed row kept them, the replaced row has new ones.
    assert!(!index
        .tensors(by("v5_5_early/moved.pt").id)
        .unwrap()
        .is_empty());
    assert_eq!(
        index.tensors(by("v5_12_4/best_Q.pt").id).unwrap(),
        index.tensors(by("v5_5/latest.pt").id).unwrap()
    );

    // Deleting a folder drops its rows; another root's rows stay.
    let other = dir.path().join("other");
    copy_dir(&root.join("v5_11"), &other);
    assert_eq!(update(&mut index, &other).added, 2);
    std::fs::remove_dir_all(root.join("v5_11")).unwrap();
    let r = update(&mut index, &root);
    assert_eq!(counts(&r), [6, 0, 0, 0, 2, 6]);
    assert_eq!(
        index.entries(std::slice::from_ref(&other)).unwrap().len(),
        2
    );
    assert_eq!(index.entries(&[]).unwrap().len(), 8);
}

#[test]
fn scan_from_a_fresh_index_is_the_scan() {
    let (dir, root) = tree();
    let db = dir.path().join("index.sqlite");
    let mut index = Index::open(&db, &IndexOptions::default()).unwrap();
    update(&mut index, &root);
    let paths = discover(&root);
    for hash in [false, true] {
        let opts = tvck::scan::ScanOptions { hash };
        let scanned = tvck::scan::scan(&root, &opts, |_| {}, |_| {});
        let from_index = index
            .fresh_summaries(&root, &paths, hash)
            .unwrap()
            .expect("fresh");
        assert_eq!(
            serde_json::to_value(&from_index).unwrap(),
            serde_json::to_value(&scanned.files).unwrap(),
            "hash = {hash}"
        );
    }
    // A changed file makes the index stale for that tree.
    std::fs::copy(root.join("v5_5/latest.pt"), root.join("v5_11/best.pt")).unwrap();
    assert!(index
        .fresh_summaries(&root, &paths, true)
        .unwrap()
        .is_none());
    // A file the index never saw, too.
    std::fs::copy(root.join("v5_5/latest.pt"), root.join("v5_5/new.pt")).unwrap();
    let paths = discover(&root);
    update(&mut index, &root.join("v5_11"));
    assert!(index
        .fresh_summaries(&root, &paths, true)
        .unwrap()
        .is_none());
    update(&mut index, &root);
    assert!(index
        .fresh_summaries(&root, &paths, true)
        .unwrap()
        .is_some());
}

#[test]
fn two_concurrent_indexers_both_finish_and_agree() {
    let (dir, root) = tree();
    let db = dir.path().join("index.sqlite");
    // Created once, so both race only for the write lock.
    drop(Index::open(&db, &IndexOptions::default()).unwrap());
    let reports: Vec<IndexReport> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut index = Index::open(&db, &IndexOptions::default()).unwrap();
                    update(&mut index, &root)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // One read everything; the other waited, then found it all unchanged.
    let mut added: Vec<usize> = reports.iter().map(|r| r.added).collect();
    added.sort();
    assert_eq!(added, [0, 8]);
    let index = Index::open_existing(&db).unwrap().unwrap();
    assert_eq!(index.entries(&[]).unwrap().len(), 8);
}

#[test]
fn a_held_write_lock_fails_clearly_after_the_busy_timeout() {
    let (dir, root) = tree();
    let db = dir.path().join("index.sqlite");
    drop(Index::open(&db, &IndexOptions::default()).unwrap());
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let opts = IndexOptions {
        busy_timeout: Duration::from_millis(200),
    };
    let mut index = Index::open(&db, &opts).unwrap();
    let err = index
        .update(std::slice::from_ref(&root), |_| {}, |_| {})
        .unwrap_err();
    assert!(matches!(err, ManagerError::Locked { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("another process is writing the index"),
        "{err}"
    );
    assert!(err.hint().unwrap().contains("wait"));
    holder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(update(&mut index, &root).added, 8);
}

#[test]
fn corrupt_and_foreign_databases_are_errors_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    // Not SQLite at all.
    let junk = dir.path().join("junk.sqlite");
    let bytes = b"this is not a database, it is a note\n".repeat(200);
    std::fs::write(&junk, &bytes).unwrap();
    for r in [
        Index::open(&junk, &IndexOptions::default()).err(),
        Index::open_existing(&junk).err(),
    ] {
        let err = r.expect("an error");
        assert!(matches!(err, ManagerError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("not a tvck index"), "{err}");
        assert!(err.hint().unwrap().contains("never overwrites"));
    }
    assert_eq!(std::fs::read(&junk).unwrap(), bytes);

    // An SQLite database of another program.
    let foreign = dir.path().join("other.sqlite");
    {
        let c = rusqlite::Connection::open(&foreign).unwrap();
        c.execute_batch("CREATE TABLE notes(t TEXT); INSERT INTO notes VALUES ('keep me');")
            .unwrap();
    }
    let before = std::fs::read(&foreign).unwrap();
    let err = Index::open(&foreign, &IndexOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, ManagerError::Foreign { .. }), "{err:?}");
    assert!(err.to_string().contains("not a tvck index"), "{err}");
    assert_eq!(std::fs::read(&foreign).unwrap(), before);

    // A truncated index (its header kept, its pages gone).
    let (tdir, root) = tree();
    let db = tdir.path().join("index.sqlite");
    let mut index = Index::open(&db, &IndexOptions::default()).unwrap();
    update(&mut index, &root);
    drop(index);
    let full = std::fs::read(&db).unwrap();
    let mut damaged = full[..4096.min(full.len())].to_vec();
    damaged.extend(std::iter::repeat_n(0xA5u8, 8192));
    std::fs::write(&db, &damaged).unwrap();
    let _ = std::fs::remove_file(tdir.path().join("index.sqlite-wal"));
    let err = Index::open(&db, &IndexOptions::default())
        .and_then(|mut i| {
            i.update(std::slice::from_ref(&root), |_| {}, |_| {})
                .map(|_| ())
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            ManagerError::Corrupt { .. } | ManagerError::Foreign { .. }
        ),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), damaged);
}

#[test]
fn index_location() {
    let p = tvck::manager::index_path(Some(Path::new("/x/i.sqlite"))).unwrap();
    assert_eq!(p, Path::new("/x/i.sqlite"));
}
