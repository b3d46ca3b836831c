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

/// Roots that overlap (a folder and one inside it, in either order) count each file once;
/// a re-index of a root inside the indexed one sees only that part.
#[test]
fn overlapping_roots_count_each_file_once() {
    let (dir, root) = tree();
    let inner = root.join("v5_5");
    let mut index =
        Index::open(&dir.path().join("index.sqlite"), &IndexOptions::default()).unwrap();
    let idx = |index: &mut Index, roots: &[&Path]| {
        let roots: Vec<PathBuf> = roots.iter().map(|r| r.to_path_buf()).collect();
        counts(&index.update(&roots, |_| {}, |_| {}).unwrap())
    };
    assert_eq!(idx(&mut index, &[&root, &inner]), [8, 8, 0, 0, 0, 0]);
    assert_eq!(index.entries(&[]).unwrap().len(), 8);
    let inside = discover(&inner)[0].clone();
    let mut bytes = std::fs::read(&inside).unwrap();
    bytes.extend_from_slice(b"tail");
    std::fs::write(&inside, bytes).unwrap();
    assert_eq!(idx(&mut index, &[&inner, &root]), [8, 0, 1, 0, 0, 7]);
    let outside = discover(&root)
        .into_iter()
        .find(|p| !p.starts_with(&inner))
        .unwrap();
    std::fs::remove_file(&outside).unwrap();
    let n_inner = discover(&inner).len();
    assert_eq!(idx(&mut index, &[&inner]), [n_inner, 0, 0, 0, 0, n_inner]);
    assert_eq!(idx(&mut index, &[&root, &inner]), [7, 0, 0, 0, 1, 7]);
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

/// The one value `sql` selects.
fn one<T: rusqlite::types::FromSql>(c: &rusqlite::Connection, sql: &str) -> T {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// A read-only connection to the index file `db`, as a reader opens it.
fn read_only(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

#[test]
fn a_first_indexing_lets_readers_read_and_leaves_the_write_ahead_log_on() {
    let (dir, root) = tree();
    let db = dir.path().join("index.sqlite");
    let mut index = Index::open(&db, &IndexOptions::default()).unwrap();
    // A reader opened while the first indexing runs (from its per-file callback, so in
    // the middle of its transaction) reads the empty index at once: the writer keeps its
    // pages in memory until the commit instead of locking the file (a reader that waited
    // would fail here with `Locked`, after a busy timeout made short for this test).
    let readers = std::sync::atomic::AtomicUsize::new(0);
    let report = index
        .update(
            std::slice::from_ref(&root),
            |_| {},
            |_| {
                if readers.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 3 {
                    let reader = read_only(&db);
                    reader.busy_timeout(Duration::from_millis(100)).unwrap();
                    let n: i64 = one(&reader, "SELECT count(*) FROM files");
                    assert_eq!(n, 0, "the reader sees the index before the commit");
                    let mode: String = one(&reader, "PRAGMA journal_mode");
                    assert_eq!(mode, "delete", "the first indexing's journal mode");
                    drop(reader);
                    let entries = Index::open_existing(&db)
                        .unwrap()
                        .unwrap()
                        .entries(&[])
                        .unwrap();
                    assert!(entries.is_empty());
                }
            },
        )
        .unwrap();
    assert_eq!(report.added, 8);
    assert!(readers.into_inner() >= 8);
    let c = rusqlite::Connection::open(&db).unwrap();
    let mode: String = one(&c, "PRAGMA journal_mode");
    assert_eq!(mode, "wal");
    assert!(!dir.path().join("index.sqlite-journal").exists());
    // With another connection holding the index open in WAL mode, a first indexing stays
    // in that mode (and still indexes everything).
    let other = tempfile::tempdir().unwrap();
    let db2 = other.path().join("index.sqlite");
    drop(Index::open(&db2, &IndexOptions::default()).unwrap());
    let holder = rusqlite::Connection::open(&db2).unwrap();
    let _: i64 = one(&holder, "SELECT count(*) FROM files");
    let mut index2 = Index::open(&db2, &IndexOptions::default()).unwrap();
    let mid_mode = std::sync::Mutex::new(None);
    let report = index2
        .update(
            std::slice::from_ref(&root),
            |_| {},
            |_| {
                let r = read_only(&db2);
                let m: String = one(&r, "PRAGMA journal_mode");
                *mid_mode.lock().unwrap() = Some(m);
            },
        )
        .unwrap();
    assert_eq!(report.added, 8);
    assert_eq!(mid_mode.into_inner().unwrap().as_deref(), Some("wal"));
    let n: i64 = one(&holder, "SELECT count(*) FROM files");
    assert_eq!(n, 8);
}

/// What an indexing killed while it commits leaves: a hot rollback journal and a file
/// half written. Made here by Python's sqlite3 in a process that exits mid-transaction
/// after SQLite spilled pages into the file (a cache of one page), as a first indexing
/// does at its commit. A reader says what happened (it cannot roll back: it opens the file
/// read-only); the next writer rolls it back, and the index is what it was.
#[test]
fn an_indexing_stopped_mid_commit_is_rolled_back_by_the_next_writer() {
    let (dir, root) = tree();
    let db = dir.path().join("index.sqlite");
    let mut index = Index::open(&db, &IndexOptions::default()).unwrap();
    assert_eq!(update(&mut index, &root).added, 8);
    drop(index);
    let script = r#"
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
assert c.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
c.execute("PRAGMA cache_size = 1")
c.execute("BEGIN IMMEDIATE")
c.execute("DELETE FROM details")
for i in range(300):
    c.execute("INSERT INTO meta VALUES (?, ?)", ("junk%d" % i, "x" * 3000))
os._exit(0)
"#;
    let out = std::process::Command::new(common::python())
        .arg("-c")
        .arg(script)
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let journal = dir.path().join("index.sqlite-journal");
    assert!(journal.exists(), "the stopped write left its journal");
    let err = Index::open_existing(&db)
        .err()
        .expect("a reader refuses it");
    assert!(matches!(err, ManagerError::Interrupted { .. }), "{err:?}");
    assert!(err.to_string().contains("index.sqlite"), "{err}");
    assert!(
        err.hint().unwrap().contains("tvck index"),
        "{:?}",
        err.hint()
    );
    // The writer rolls it back: every row as before, no junk, the log's mode again.
    let mut index = Index::open(&db, &IndexOptions::default()).unwrap();
    assert!(!journal.exists());
    let again = update(&mut index, &root);
    assert_eq!((again.unchanged, again.added), (8, 0));
    assert_eq!(index.entries(&[]).unwrap().len(), 8);
    drop(index);
    let c = rusqlite::Connection::open(&db).unwrap();
    let junk: i64 = one(&c, "SELECT count(*) FROM meta WHERE key LIKE 'junk%'");
    assert_eq!(junk, 0);
    let mode: String = one(&c, "PRAGMA journal_mode");
    assert_eq!(mode, "wal");
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

/// The tables every schema version has had, as the first tvck index wrote them.
const OTHER_TABLES: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE aliases (name TEXT PRIMARY KEY, path TEXT NOT NULL, fingerprint TEXT, at INTEGER NOT NULL);
CREATE TABLE alias_history (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, action TEXT NOT NULL,
    name TEXT NOT NULL, path TEXT, fingerprint TEXT, previous TEXT);
CREATE TABLE prune_audit (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, path TEXT NOT NULL,
    size INTEGER NOT NULL, fingerprint TEXT, rule TEXT NOT NULL, outcome TEXT NOT NULL);
";

/// The schema of version 1 (the summary in the `files` row, a row per tensor).
const SCHEMA_V1: &str = "
CREATE TABLE files (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, fingerprint TEXT,
    summary TEXT NOT NULL, migration TEXT, indexed_at INTEGER NOT NULL
);
CREATE INDEX files_fingerprint ON files(fingerprint);
CREATE TABLE tensors (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    name TEXT NOT NULL, dtype TEXT NOT NULL, shape TEXT NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY (file_id, name)
) WITHOUT ROWID;
CREATE INDEX tensors_hash ON tensors(hash);
INSERT INTO meta(key, value) VALUES ('application', 'tvck-index'), ('schema_version', '1');
";

/// The schema of version 2 (the query columns in `files`; the summary and the whole tensor
/// list, names and shapes included, in `details`), less most query columns: an upgrade
/// reads only these.
const SCHEMA_V2: &str = "
CREATE TABLE files (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, fingerprint TEXT,
    indexed_at INTEGER NOT NULL, f_version TEXT, f_unreadable INTEGER NOT NULL,
    f_unsafe INTEGER NOT NULL
);
CREATE INDEX files_walk ON files(path, size, mtime_ns, inode, f_unreadable, f_unsafe);
CREATE TABLE details (
    file_id INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
    summary TEXT NOT NULL, migration TEXT, tensors BLOB NOT NULL
);
INSERT INTO meta(key, value) VALUES ('application', 'tvck-index'), ('schema_version', '2');
";

/// Version 2's tensor list: per tensor, in name order, the name and the dtype (a u32 byte
/// length and UTF-8 each), the shape (a u32 rank, a u64 per dimension), the 32-byte hash.
fn tensor_list_v2(tensors: &[tvck::manager::index::TensorRow]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in tensors {
        for text in [&t.name, &t.dtype] {
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in &t.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.hash);
    }
    out
}

/// Version 3 from an index of this version: `files` a table with rowids (its `id`) and a
/// unique path, the tensor hashes back in `details`, no `hashes` table.
fn down_to_v3(c: &rusqlite::Connection) {
    let files: String = c
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'files'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let v3 = files
        .replace("CREATE TABLE files (", "CREATE TABLE files_v3 (")
        .replace("id INTEGER NOT NULL UNIQUE,", "id INTEGER PRIMARY KEY,")
        .replace(
            "path TEXT NOT NULL PRIMARY KEY,",
            "path TEXT NOT NULL UNIQUE,",
        )
        .replace(") WITHOUT ROWID", ")");
    assert!(
        v3.contains("id INTEGER PRIMARY KEY") && !v3.contains("WITHOUT ROWID"),
        "{v3}"
    );
    // (Dropping `files` with the foreign keys on would empty the tables pointing at it.)
    c.execute_batch(&format!(
        "PRAGMA foreign_keys = OFF;
         {v3};
         INSERT INTO files_v3 SELECT * FROM files;
         DROP INDEX files_walk;
         DROP TABLE files;
         ALTER TABLE files_v3 RENAME TO files;
         CREATE INDEX files_walk ON files(path, size, mtime_ns, inode, f_unreadable, f_unsafe);
         {DOWN_TO_V3}"
    ))
    .unwrap();
}

/// [`down_to_v3`]'s tables besides `files`.
const DOWN_TO_V3: &str = "
CREATE TABLE details_v3 (
    file_id INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
    summary TEXT NOT NULL, migration TEXT, hashes BLOB NOT NULL
);
INSERT INTO details_v3 SELECT d.file_id, d.summary, d.migration, h.hashes
    FROM details AS d JOIN hashes AS h ON h.file_id = d.file_id;
DROP TABLE hashes;
DROP TABLE details;
ALTER TABLE details_v3 RENAME TO details;
UPDATE meta SET value = '3' WHERE key = 'schema_version';
";

/// An index of schema `version` (1, 2 or 3) of what `index` holds, its rows written the
/// way that version wrote them, with an alias.
fn write_old(version: u32, index: &Index, root: &Path, to: &Path) {
    if version == 3 {
        let c = rusqlite::Connection::open(index.path()).unwrap();
        c.execute("VACUUM INTO ?1", [to.to_str().unwrap()]).unwrap();
        let c = rusqlite::Connection::open(to).unwrap();
        down_to_v3(&c);
        add_alias(&c, index, root);
        return;
    }
    let c = rusqlite::Connection::open(to).unwrap();
    c.execute_batch(OTHER_TABLES).unwrap();
    c.execute_batch(if version == 1 { SCHEMA_V1 } else { SCHEMA_V2 })
        .unwrap();
    for e in index.entries(&[root.to_path_buf()]).unwrap() {
        let stat = (e.stat.size as i64, e.stat.mtime_ns, e.stat.inode as i64);
        let summary = serde_json::to_string(&e.summary).unwrap();
        let migration = e.migration.as_ref().map(|m| m.to_string());
        let tensors = index.tensors(e.id).unwrap();
        if version == 1 {
            c.execute(
                "INSERT INTO files(id, path, size, mtime_ns, inode, fingerprint, summary, migration, indexed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)",
                rusqlite::params![e.id, e.path, stat.0, stat.1, stat.2, e.summary.fingerprint, summary, migration],
            )
            .unwrap();
            for t in tensors {
                c.execute(
                    "INSERT INTO tensors(file_id, name, dtype, shape, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![
                        e.id,
                        t.name,
                        t.dtype,
                        serde_json::to_string(&t.shape).unwrap(),
                        &t.hash[..]
                    ],
                )
                .unwrap();
            }
        } else {
            c.execute(
                "INSERT INTO files(id, path, size, mtime_ns, inode, fingerprint, indexed_at, f_version,
                                   f_unreadable, f_unsafe)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, NULL, 0, 0)",
                rusqlite::params![e.id, e.path, stat.0, stat.1, stat.2, e.summary.fingerprint],
            )
            .unwrap();
            c.execute(
                "INSERT INTO details(file_id, summary, migration, tensors) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![e.id, summary, migration, tensor_list_v2(&tensors)],
            )
            .unwrap();
        }
    }
    add_alias(&c, index, root);
}

/// The alias `production` of the v5.12.4 sample, as every version stores aliases.
fn add_alias(c: &rusqlite::Connection, index: &Index, root: &Path) {
    let best = index
        .entries(&[root.to_path_buf()])
        .unwrap()
        .into_iter()
        .find(|e| e.path.ends_with("v5_12_4/best_Q.pt"))
        .unwrap();
    c.execute(
        "INSERT INTO aliases(name, path, fingerprint, at) VALUES ('production', ?1, NULL, 5)",
        [&best.path],
    )
    .unwrap();
}

#[test]
fn an_index_of_an_older_schema_is_upgraded_in_place_by_a_writer_and_refused_by_a_reader() {
    for version in [1, 2, 3] {
        upgrades_in_place(version);
    }
}

fn upgrades_in_place(version: u32) {
    let (dir, root) = tree();
    let mut current =
        Index::open(&dir.path().join("now.sqlite"), &IndexOptions::default()).unwrap();
    update(&mut current, &root);
    let v1 = dir.path().join("old.sqlite");
    write_old(version, &current, &root, &v1);

    // A reader does not write: it says how to upgrade.
    let err = Index::open_existing(&v1).err().expect("refused");
    assert!(
        matches!(err, ManagerError::OlderSchema { found, .. } if found == i64::from(version)),
        "{err:?}"
    );
    assert!(
        err.hint().unwrap().contains("upgrades the index in place"),
        "{:?}",
        err.hint()
    );

    // A writer upgrades it: same entries, tensors and alias, nothing read again.
    let mut upgraded = Index::open(&v1, &IndexOptions::default()).unwrap();
    let roots = [root.clone()];
    let json = |i: &Index| serde_json::to_value(i.entries(&roots).unwrap()).unwrap();
    let mut want = json(&current);
    for e in want.as_array_mut().unwrap() {
        if e["path"].as_str().unwrap().ends_with("v5_12_4/best_Q.pt") {
            e["aliases"] = serde_json::json!(["production"]);
        }
    }
    assert_eq!(json(&upgraded), want);
    for (a, b) in current
        .entries(&roots)
        .unwrap()
        .iter()
        .zip(upgraded.entries(&roots).unwrap())
    {
        assert_eq!(
            current.tensors(a.id).unwrap(),
            upgraded.tensors(b.id).unwrap()
        );
    }
    assert_eq!(counts(&update(&mut upgraded, &root)), [8, 0, 0, 0, 0, 8]);
    // The query columns are filled: `ls --where` answers from them.
    let q = tvck::manager::Query::parse("version == v5_12_4 and alias == production").unwrap();
    let hits = upgraded.query(&roots, Some(&q), None, None).unwrap();
    assert_eq!(hits.len(), 1);
    assert!(hits[0].path.ends_with("v5_12_4/best_Q.pt"));
    drop(upgraded);
    assert!(
        Index::open_existing(&v1).unwrap().is_some(),
        "a reader opens it now"
    );
    // A removed file's details go with its row (the cascade survived the upgrade).
    std::fs::remove_file(root.join("v5_11/best.pt")).unwrap();
    let mut again = Index::open(&v1, &IndexOptions::default()).unwrap();
    assert_eq!(update(&mut again, &root).removed, 1);
    let c = rusqlite::Connection::open(&v1).unwrap();
    for table in ["details", "hashes"] {
        let orphans: i64 = c
            .query_row(
                &format!(
                    "SELECT count(*) FROM {table} WHERE file_id NOT IN (SELECT id FROM files)"
                ),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(orphans, 0, "{table}");
    }
    // The tables are this version's: the hashes in their own, none left in `details`.
    let details: String = c
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'details'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!details.contains("hashes"), "{details}");
    let files: String = c
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'files'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(files.contains("WITHOUT ROWID"), "{files}");
    let rows: i64 = c
        .query_row("SELECT count(*) FROM hashes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 7, "one row per file left");
}

#[test]
fn a_failed_upgrade_leaves_the_old_index_as_it_was() {
    let (dir, root) = tree();
    let mut current = Index::open(&dir.path().join("v2.sqlite"), &IndexOptions::default()).unwrap();
    update(&mut current, &root);
    let v1 = dir.path().join("v1.sqlite");
    write_old(1, &current, &root, &v1);
    {
        let c = rusqlite::Connection::open(&v1).unwrap();
        c.execute(
            "UPDATE files SET summary = 'not json' WHERE id = (SELECT max(id) FROM files)",
            [],
        )
        .unwrap();
    }
    let before = std::fs::read(&v1).unwrap();
    let err = Index::open(&v1, &IndexOptions::default())
        .err()
        .expect("refused");
    assert!(matches!(err, ManagerError::Foreign { .. }), "{err:?}");
    assert!(
        err.to_string().contains("does not hold a tvck summary"),
        "{err}"
    );
    let c = rusqlite::Connection::open(&v1).unwrap();
    let version: String = c
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, "1");
    let n: i64 = c
        .query_row("SELECT count(*) FROM tensors", [], |r| r.get(0))
        .unwrap();
    assert!(n > 0);
    drop(c);
    assert_eq!(std::fs::read(&v1).unwrap(), before);
}

#[test]
fn freshness_sees_every_change_and_walks_links_and_special_files_the_slow_way() {
    let (dir, root) = tree();
    let mut index = Index::open(&dir.path().join("i.sqlite"), &IndexOptions::default()).unwrap();
    update(&mut index, &root);
    assert!(index.is_fresh_tree(&root).unwrap());
    assert!(index.is_fresh(&root, &discover(&root)).unwrap());
    let f = root.join("v5_11/best.pt");
    let bytes = std::fs::read(&f).unwrap();
    // Rewritten in place, same size, other bytes: its mtime moved on.
    std::thread::sleep(Duration::from_millis(20));
    let mut other = bytes.clone();
    let n = other.len();
    other[n - 1] ^= 1;
    std::fs::write(&f, &other).unwrap();
    assert!(!index.is_fresh_tree(&root).unwrap(), "changed in place");
    assert!(!index.is_fresh(&root, &discover(&root)).unwrap());
    update(&mut index, &root);
    assert!(index.is_fresh_tree(&root).unwrap());
    // Added, removed, renamed.
    std::fs::write(root.join("v5_11/new.pt"), &bytes).unwrap();
    assert!(!index.is_fresh_tree(&root).unwrap(), "added");
    std::fs::remove_file(root.join("v5_11/new.pt")).unwrap();
    assert!(index.is_fresh_tree(&root).unwrap(), "back as indexed");
    std::fs::rename(&f, root.join("v5_11/renamed.pt")).unwrap();
    assert!(!index.is_fresh_tree(&root).unwrap(), "renamed");
    update(&mut index, &root);
    std::fs::remove_file(root.join("v5_11/renamed.pt")).unwrap();
    assert!(!index.is_fresh_tree(&root).unwrap(), "removed");
    update(&mut index, &root);
    // A link in the tree: the walk that follows links decides, and agrees.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(root.join("v5_5/latest.pt"), root.join("link.pt")).unwrap();
        assert!(tvck::discover::discover_regular(&root, |_, _| ()).is_none());
        assert!(!index.is_fresh_tree(&root).unwrap(), "a new (linked) file");
        update(&mut index, &root);
        assert!(index.is_fresh_tree(&root).unwrap());
        assert!(index.is_fresh(&root, &discover(&root)).unwrap());
    }
    // A file root.
    let one = root.join("v5_5/latest.pt");
    assert!(index.is_fresh_tree(&one).unwrap());
}

#[test]
fn selection_reads_from_the_index_what_it_reads_from_the_files() {
    use tvck::manager::select;
    let (dir, root) = tree();
    // A second copy of the samples: two files of each layout.
    copy_dir(&common::root().join("checkpoints"), &root.join("again"));
    let db = dir.path().join("i.sqlite");
    let mut index = Index::open(&db, &IndexOptions::default()).unwrap();
    assert_eq!(update(&mut index, &root).files, 16);
    let roots = [root.canonicalize().unwrap()];
    let mut from_files = select::sources_from_files(&roots);
    // The index keeps where a coverage came from in the summary only, and a model state's
    // keys in name order (a file has them in its own order).
    for s in &mut from_files {
        s.metrics.coverage_source = None;
        let mut shapes = s.shapes.to_vec();
        shapes.sort();
        s.shapes = shapes.into();
    }
    let from_index = index.candidates(&roots).unwrap();
    assert!(from_files.len() >= 10, "{}", from_files.len());
    assert_eq!(from_index.len(), from_files.len());
    for (a, b) in from_index.iter().zip(&from_files) {
        assert!(
            a == b,
            "{} differs from what its file says",
            a.path.display()
        );
    }
    // Each layout is stored once, and the two copies of a file share it.
    let c = rusqlite::Connection::open(&db).unwrap();
    let count = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
    let layouts = count("SELECT count(*) FROM layouts");
    let used = count("SELECT count(DISTINCT layout_id) FROM files");
    assert_eq!(layouts, used);
    assert!(layouts <= 8, "{layouts} layouts for 8 distinct files");
    // A layout no file has any more is dropped with the last file that had it.
    let gone: Vec<PathBuf> = discover(&root);
    for p in &gone[1..] {
        std::fs::remove_file(p).unwrap();
    }
    update(&mut index, &root);
    assert_eq!(count("SELECT count(*) FROM layouts"), 1);
    let left = index.entries(&roots).unwrap();
    assert_eq!(left.len(), 1);
    assert!(!index.tensors(left[0].id).unwrap().is_empty());
}

#[test]
fn fresh_candidates_are_the_candidates_while_every_file_is_unchanged() {
    let (dir, root) = tree();
    // A file that is no candidate (unreadable) still counts for freshness.
    let junk = root.join("v5_5/junk.pt");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let mut index = Index::open(&dir.path().join("i.sqlite"), &IndexOptions::default()).unwrap();
    update(&mut index, &root);
    let canon = root.canonicalize().unwrap();
    let all = index.candidates(std::slice::from_ref(&canon)).unwrap();
    assert!(all.len() >= 5, "{}", all.len());
    assert!(all.iter().all(|s| s.path != junk.canonicalize().unwrap()));
    let fresh = |index: &Index| index.fresh_candidates(std::slice::from_ref(&root)).unwrap();
    assert_eq!(fresh(&index).as_deref(), Some(&all[..]));
    // Several roots, and a file root, the same way.
    let sub = root.join("v5_5");
    let both = index
        .fresh_candidates(&[sub.clone(), root.join("v5_11")])
        .unwrap()
        .unwrap();
    let expect = index
        .candidates(&[
            sub.canonicalize().unwrap(),
            root.join("v5_11").canonicalize().unwrap(),
        ])
        .unwrap();
    assert_eq!(both, expect);
    let one = root.join("v5_12_4/best_Q.pt");
    let single = index
        .fresh_candidates(std::slice::from_ref(&one))
        .unwrap()
        .unwrap();
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].path, one.canonicalize().unwrap());
    // The non-candidate changed, then re-indexed; gone; a new file.
    std::fs::write(&junk, b"not a checkpoint, longer").unwrap();
    assert_eq!(fresh(&index), None);
    update(&mut index, &root);
    assert_eq!(fresh(&index).as_deref(), Some(&all[..]));
    std::fs::remove_file(&junk).unwrap();
    assert_eq!(fresh(&index), None);
    update(&mut index, &root);
    assert_eq!(fresh(&index).as_deref(), Some(&all[..]));
    std::fs::copy(root.join("v5_5/latest.pt"), root.join("v5_5/new.pt")).unwrap();
    assert_eq!(fresh(&index), None);
    // A root that does not exist is never fresh.
    assert_eq!(
        index.fresh_candidates(&[root.join("missing")]).unwrap(),
        None
    );
}
