//! The index database: one row per checkpoint file (its scan summary with the weights
//! fingerprint, its migration record, its stat), one row per model-state tensor (name,
//! dtype, shape, SHA-256 of its logical bytes).
//!
//! * A `meta` table names the application and the schema version; a database without it
//!   that holds any table is foreign, a file that is not SQLite is corrupt: both are errors
//!   and the file is left as it is.
//! * [`Index::update`] takes the write lock first (`BEGIN IMMEDIATE`: a second indexer
//!   waits up to the busy timeout, then fails with [`ManagerError::Locked`]), walks the
//!   roots, reads only files whose (size, mtime, inode) changed, moves the row of a renamed
//!   file (same stat, new path) without reading it, drops rows of files that vanished and
//!   commits once: a failed or killed run leaves the previous index whole.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::ManagerError;
use crate::scan::{self, FileSummary};

/// The schema this tvck writes and reads.
pub const SCHEMA_VERSION: i64 = 1;
/// `meta.application` of a tvck index.
const APPLICATION: &str = "tvck-index";

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    fingerprint TEXT,
    summary TEXT NOT NULL,
    migration TEXT,
    indexed_at INTEGER NOT NULL
);
CREATE INDEX files_fingerprint ON files(fingerprint);
CREATE TABLE tensors (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    dtype TEXT NOT NULL,
    shape TEXT NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (file_id, name)
) WITHOUT ROWID;
CREATE INDEX tensors_hash ON tensors(hash);
CREATE TABLE aliases (
    name TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    fingerprint TEXT,
    at INTEGER NOT NULL
);
CREATE TABLE alias_history (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    action TEXT NOT NULL,
    name TEXT NOT NULL,
    path TEXT,
    fingerprint TEXT,
    previous TEXT
);
CREATE TABLE prune_audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    fingerprint TEXT,
    rule TEXT NOT NULL,
    outcome TEXT NOT NULL
);
";

/// The model part a state_dict key belongs to: its first segment (`encoder_A`), after a
/// DataParallel `module.` prefix.
pub fn part_of(key: &str) -> &str {
    let key = key.strip_prefix("module.").unwrap_or(key);
    key.split('.').next().unwrap_or(key)
}

/// How an index is opened.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// How long a writer waits for another one to finish.
    pub busy_timeout: Duration,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            busy_timeout: Duration::from_secs(60),
        }
    }
}

impl IndexOptions {
    /// The options the environment asks for: the busy timeout from
    /// [`BUSY_TIMEOUT_ENV`](super::BUSY_TIMEOUT_ENV) (milliseconds) when set, else the
    /// default (60 s).
    pub fn from_env() -> Result<IndexOptions, ManagerError> {
        match std::env::var_os(super::BUSY_TIMEOUT_ENV) {
            None => Ok(IndexOptions::default()),
            Some(v) => Self::with_busy_timeout(&v.to_string_lossy()),
        }
    }

    /// The options with a busy timeout given as milliseconds in text.
    pub fn with_busy_timeout(ms: &str) -> Result<IndexOptions, ManagerError> {
        match ms.trim().parse::<u64>() {
            Ok(ms) => Ok(IndexOptions {
                busy_timeout: Duration::from_millis(ms),
            }),
            Err(_) => Err(ManagerError::BadSetting {
                name: super::BUSY_TIMEOUT_ENV,
                value: ms.to_string(),
                expected: "a whole number of milliseconds",
            }),
        }
    }
}

/// An open index.
pub struct Index {
    pub(super) conn: Connection,
    path: PathBuf,
    busy_timeout: Duration,
}

/// A file's identity for re-indexing: (size, mtime in ns, inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
}

impl Stat {
    /// The `size, mtime_ns, inode` columns of a `files` row, from column `first` on.
    fn from_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Stat> {
        Ok(Stat {
            size: r.get::<_, i64>(first)? as u64,
            mtime_ns: r.get(first + 1)?,
            inode: r.get::<_, i64>(first + 2)? as u64,
        })
    }

    /// The stat of `path` (links followed).
    pub fn of(path: &Path) -> std::io::Result<Stat> {
        let m = std::fs::metadata(path)?;
        let mtime_ns = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Stat {
            size: m.len(),
            mtime_ns,
            inode,
        })
    }
}

/// One indexed checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    #[serde(skip)]
    pub id: i64,
    /// Absolute path (the indexed root canonicalized, then the walk's path).
    pub path: String,
    #[serde(skip)]
    pub stat: Stat,
    /// The scan summary (its `path` is the absolute path too), fingerprint included.
    #[serde(flatten)]
    pub summary: FileSummary,
    /// The migration record of a file tvck converted, as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration: Option<serde_json::Value>,
    /// Seconds since the Unix epoch.
    pub modified: u64,
    /// Aliases given by `tag`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// What one `update` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexReport {
    pub index: String,
    pub roots: Vec<String>,
    /// Checkpoint files under the roots now.
    pub files: usize,
    /// Read for the first time.
    pub added: usize,
    /// Read again: size, mtime or inode changed.
    pub changed: usize,
    /// Moved to a new path without reading (same size, mtime and inode).
    pub renamed: usize,
    /// Rows of files that no longer exist, dropped.
    pub removed: usize,
    pub unchanged: usize,
    /// Files that could not be read (kept, with their error).
    pub unreadable: usize,
    pub unsafe_files: usize,
    /// Paths met and not read (links to nothing, FIFOs, folders too deep …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<scan::Skipped>,
}

/// A file read for the index.
struct Record {
    path: String,
    stat: Stat,
    summary: FileSummary,
    migration: Option<String>,
    /// (name, dtype, shape JSON, hash) of every fingerprinted tensor.
    tensors: Vec<(String, &'static str, String, [u8; 32])>,
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Index {
    /// Open the index at `path`, creating it (and its folder) when it does not exist.
    pub fn open(path: &Path, opts: &IndexOptions) -> Result<Index, ManagerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ManagerError::Folder {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|e| ManagerError::db(path, e))?;
        let mut index = Index {
            conn,
            path: path.to_path_buf(),
            busy_timeout: opts.busy_timeout,
        };
        index.prepare(true)?;
        Ok(index)
    }

    /// Open an existing index read-only; `None` when there is no file at `path`.
    pub fn open_existing(path: &Path) -> Result<Option<Index>, ManagerError> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| ManagerError::db(path, e))?;
        let mut index = Index {
            conn,
            path: path.to_path_buf(),
            busy_timeout: IndexOptions::default().busy_timeout,
        };
        index.prepare(false)?;
        Ok(Some(index))
    }

    /// The index file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn err(&self, e: rusqlite::Error) -> ManagerError {
        if e.sqlite_error_code() == Some(rusqlite::ffi::ErrorCode::DatabaseBusy) {
            return ManagerError::Locked {
                path: self.path.clone(),
                waited_ms: self.busy_timeout.as_millis().min(u64::MAX as u128) as u64,
            };
        }
        ManagerError::db(&self.path, e)
    }

    /// Check the schema; create it in an empty database when `create`.
    fn prepare(&mut self, create: bool) -> Result<(), ManagerError> {
        self.conn
            .busy_timeout(self.busy_timeout)
            .map_err(|e| self.err(e))?;
        self.conn
            .pragma_update(None, "foreign_keys", true)
            .map_err(|e| self.err(e))?;
        // A page cache of up to 64 MB (SQLite's default is 2 MB): the random inserts into
        // the tensor-hash index of a first indexing then stay in memory instead of
        // spilling pages to the WAL mid-transaction and reading them back; sorts and
        // temporary tables stay in memory too.
        self.conn
            .pragma_update(None, "cache_size", -65536)
            .map_err(|e| self.err(e))?;
        self.conn
            .pragma_update(None, "temp_store", "MEMORY")
            .map_err(|e| self.err(e))?;
        // Reading the schema is the first access: a file that is not SQLite fails here.
        let tables: Vec<String> = {
            let mut st = self
                .conn
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
                .map_err(|e| self.err(e))?;
            st.query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<Result<_, _>>())
                .map_err(|e| self.err(e))?
        };
        if tables.is_empty() && create {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| ManagerError::db(&self.path, e))?;
            // Someone else may have created it between our look and the lock.
            let n: i64 = tx
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(|e| ManagerError::db(&self.path, e))?;
            if n == 0 {
                tx.execute_batch(SCHEMA)
                    .and_then(|_| {
                        tx.execute(
                            "INSERT INTO meta(key, value) VALUES ('application', ?1), ('schema_version', ?2)",
                            params![APPLICATION, SCHEMA_VERSION.to_string()],
                        )
                    })
                    .map_err(|e| ManagerError::db(&self.path, e))?;
            }
            tx.commit().map_err(|e| self.err(e))?;
            // Readers do not block the writer, nor the writer them.
            let _: String = self
                .conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(|e| self.err(e))?;
            return self.check_meta();
        }
        if tables.is_empty() {
            return Err(ManagerError::Foreign {
                path: self.path.clone(),
                what: "an empty database".into(),
            });
        }
        self.check_meta()
    }

    fn check_meta(&self) -> Result<(), ManagerError> {
        let foreign = |what: &str| ManagerError::Foreign {
            path: self.path.clone(),
            what: what.to_string(),
        };
        let get = |key: &str| -> Result<Option<String>, ManagerError> {
            self.conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map_err(|e| match e {
                    rusqlite::Error::SqliteFailure(_, Some(ref m)) if m.contains("no such") => {
                        foreign("it has no `meta` table")
                    }
                    e => self.err(e),
                })
        };
        if get("application")?.as_deref() != Some(APPLICATION) {
            return Err(foreign("its `meta` table does not name tvck-index"));
        }
        let version: i64 = get("schema_version")?
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| foreign("no schema version"))?;
        if version > SCHEMA_VERSION {
            return Err(ManagerError::NewerSchema {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// Index every checkpoint under `roots` (folders or files): read what is new or
    /// changed, move renamed rows, drop vanished ones, in one transaction. `on_start`
    /// gets the number of files to read, `on_file` is called after each one is read.
    pub fn update(
        &mut self,
        roots: &[PathBuf],
        on_start: impl FnOnce(usize),
        on_file: impl Fn(&FileSummary) + Sync,
    ) -> Result<IndexReport, ManagerError> {
        let roots: Vec<PathBuf> = roots
            .iter()
            .map(|r| {
                r.canonicalize().map_err(|source| ManagerError::Root {
                    path: r.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        let index_path = self.path.clone();
        let busy = self.busy_timeout.as_millis().min(u64::MAX as u128) as u64;
        let db = |e| ManagerError::db(&index_path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| {
                if e.sqlite_error_code() == Some(rusqlite::ffi::ErrorCode::DatabaseBusy) {
                    ManagerError::Locked {
                        path: index_path.clone(),
                        waited_ms: busy,
                    }
                } else {
                    ManagerError::db(&index_path, e)
                }
            })?;
        let mut report = IndexReport {
            index: path_text(&index_path),
            roots: roots.iter().map(|r| path_text(r)).collect(),
            ..IndexReport::default()
        };
        // What the index holds under the roots.
        let mut known: HashMap<String, (i64, Stat)> = HashMap::new();
        {
            let mut st = tx
                .prepare(
                    "SELECT id, path, size, mtime_ns, inode FROM files WHERE path = ?1
                     UNION ALL
                     SELECT id, path, size, mtime_ns, inode FROM files
                     WHERE path >= ?2 AND path < ?3",
                )
                .map_err(db)?;
            for root in &roots {
                let t = path_text(root);
                let base = t.trim_end_matches('/').to_string();
                let rows = st
                    .query_map(params![t, format!("{base}/"), format!("{base}0")], |r| {
                        Ok((
                            r.get::<_, String>(1)?,
                            (r.get::<_, i64>(0)?, Stat::from_row(r, 2)?),
                        ))
                    })
                    .map_err(db)?;
                for row in rows {
                    let (p, v) = row.map_err(db)?;
                    known.insert(p, v);
                }
            }
        }
        // What is there now.
        let mut present: Vec<(PathBuf, String, Stat)> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for root in &roots {
            let crate::discover::Discovered {
                files: paths,
                skipped,
                ..
            } = crate::discover::discover(root, crate::discover::Walk::everything());
            report.skipped.extend(skipped);
            for p in paths {
                let text = path_text(&p);
                if !seen.insert(text.clone()) {
                    continue;
                }
                // A file gone between the walk and the stat is simply not there.
                if let Ok(stat) = Stat::of(&p) {
                    present.push((p, text, stat));
                }
            }
        }
        report.files = present.len();
        let mut to_read: Vec<(PathBuf, String, Stat)> = Vec::new();
        let mut replaced: Vec<i64> = Vec::new();
        for (p, text, stat) in present {
            match known.get(&text) {
                Some((_, s)) if *s == stat => report.unchanged += 1,
                Some((id, _)) => {
                    replaced.push(*id);
                    report.changed += 1;
                    to_read.push((p, text, stat));
                }
                None => to_read.push((p, text, stat)),
            }
        }
        // Rows whose file is gone; a new path with one's exact stat is that file, renamed.
        let mut vanished: HashMap<Stat, Vec<i64>> = HashMap::new();
        for (p, (id, stat)) in &known {
            if !seen.contains(p) {
                vanished.entry(*stat).or_default().push(*id);
            }
        }
        let mut renames: Vec<(i64, String)> = Vec::new();
        let old_path: HashMap<i64, &String> = known.iter().map(|(p, (id, _))| (*id, p)).collect();
        to_read.retain(|(_, text, stat)| {
            if known.contains_key(text) {
                return true;
            }
            match vanished.get_mut(stat).and_then(Vec::pop) {
                Some(id) => {
                    renames.push((id, text.clone()));
                    false
                }
                None => true,
            }
        });
        report.renamed = renames.len();
        report.added = to_read.len() - report.changed;
        let removed: Vec<i64> = vanished.into_values().flatten().collect();
        report.removed = removed.len();
        {
            let mut del = tx.prepare("DELETE FROM files WHERE id = ?1").map_err(db)?;
            for id in removed.iter().chain(&replaced) {
                del.execute([id]).map_err(db)?;
            }
            let mut mv = tx
                .prepare("UPDATE files SET path = ?2 WHERE id = ?1")
                .map_err(db)?;
            // An alias follows its file.
            let mut follow = tx
                .prepare("UPDATE aliases SET path = ?2 WHERE path = ?1")
                .map_err(db)?;
            for (id, path) in &renames {
                mv.execute(params![id, path]).map_err(db)?;
                follow.execute(params![old_path[id], path]).map_err(db)?;
            }
        }
        on_start(to_read.len());
        let paths: Vec<PathBuf> = to_read.iter().map(|(p, _, _)| p.clone()).collect();
        // Read (in parallel) and write (here) at the same time.
        let (send, recv) = std::sync::mpsc::sync_channel::<Record>(256);
        let written: Result<(), ManagerError> = std::thread::scope(|s| {
            let to_read = &to_read;
            let on_file = &on_file;
            s.spawn(move || {
                scan::hash_files(&paths, |i, r| {
                    let (_, text, stat) = &to_read[i];
                    let record = record(text, *stat, r);
                    on_file(&record.summary);
                    // The receiver only stops early on a database error.
                    let _ = send.send(record);
                });
            });
            let mut files = tx
                .prepare(
                    "INSERT INTO files(path, size, mtime_ns, inode, fingerprint, summary, migration, indexed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(db)?;
            let mut tensors = tx
                .prepare(
                    "INSERT INTO tensors(file_id, name, dtype, shape, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db)?;

            let now = now_s();
            for rec in recv {
                let summary = serde_json::to_string(&rec.summary).expect("a summary serializes");
                files
                    .execute(params![
                        rec.path,
                        rec.stat.size as i64,
                        rec.stat.mtime_ns,
                        rec.stat.inode as i64,
                        rec.summary.fingerprint,
                        summary,
                        rec.migration,
                        now
                    ])
                    .map_err(db)?;
                let id = tx.last_insert_rowid();
                for (name, dtype, shape, hash) in &rec.tensors {
                    tensors
                        .execute(params![id, name, dtype, shape, &hash[..]])
                        .map_err(db)?;
                }
            }
            Ok(())
        });
        written?;
        tx.commit().map_err(db)?;
        let mut seen_ids: HashSet<i64> = HashSet::new();
        for root in &roots {
            let t = path_text(root);
            let base = t.trim_end_matches('/').to_string();
            let mut st = self
                .conn
                .prepare_cached(
                    "SELECT id,
                            json_extract(summary, '$.error') IS NOT NULL,
                            coalesce(json_array_length(summary, '$.unsafe_globals'), 0) > 0
                     FROM files WHERE path = ?1
                     UNION ALL
                     SELECT id,
                            json_extract(summary, '$.error') IS NOT NULL,
                            coalesce(json_array_length(summary, '$.unsafe_globals'), 0) > 0
                     FROM files WHERE path >= ?2 AND path < ?3",
                )
                .map_err(db)?;
            let rows = st
                .query_map(params![t, format!("{base}/"), format!("{base}0")], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, bool>(1)?,
                        r.get::<_, bool>(2)?,
                    ))
                })
                .map_err(db)?;
            for row in rows {
                let (id, unreadable, unsafe_globals) = row.map_err(db)?;
                if seen_ids.insert(id) {
                    report.unreadable += usize::from(unreadable);
                    report.unsafe_files += usize::from(unsafe_globals);
                }
            }
        }
        Ok(report)
    }

    /// Every indexed file under `roots` (all of them when `roots` is empty), by path.
    pub fn entries(&self, roots: &[PathBuf]) -> Result<Vec<Entry>, ManagerError> {
        self.entries_filtered(roots, "1")
    }

    /// [`Index::entries`] of the files whose summary says they have a TernaryVAE version,
    /// were read without error and hold no unsafe global: the candidates a selection
    /// ranks (decided in SQL: no other summary is decoded).
    pub fn versioned_entries(&self, roots: &[PathBuf]) -> Result<Vec<Entry>, ManagerError> {
        self.entries_filtered(
            roots,
            "json_extract(summary, '$.version') IS NOT NULL
             AND json_extract(summary, '$.error') IS NULL
             AND coalesce(json_array_length(summary, '$.unsafe_globals'), 0) = 0",
        )
    }

    /// The rows under `roots` matching the SQL condition `cond` (a constant of this
    /// module, never text from outside), by path. A root selects its own path and the
    /// range of paths below it (`root/` ≤ path < `root0`, `0` following `/`), so SQLite
    /// walks only that part of the path index.
    fn entries_filtered(&self, roots: &[PathBuf], cond: &str) -> Result<Vec<Entry>, ManagerError> {
        const COLUMNS: &str =
            "SELECT id, path, size, mtime_ns, inode, summary, migration FROM files";
        let ranges: Vec<(String, String, String)> = roots
            .iter()
            .map(|r| {
                let t = path_text(&r.canonicalize().unwrap_or_else(|_| r.clone()));
                let base = t.trim_end_matches('/').to_string();
                (t, format!("{base}/"), format!("{base}0"))
            })
            .collect();
        let aliases = self.aliases()?;
        let mut by_path: HashMap<&str, Vec<String>> = HashMap::new();
        for a in &aliases {
            by_path
                .entry(a.path.as_str())
                .or_default()
                .push(a.name.clone());
        }
        let mut out = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut read = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<(), ManagerError> {
            let mut st = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
            let rows = st
                .query_map(args, |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        Stat::from_row(r, 2)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                let (id, path, stat, summary, migration) = row.map_err(|e| self.err(e))?;
                if !seen.insert(path.clone()) {
                    continue;
                }
                let Ok(summary) = serde_json::from_str::<FileSummary>(&summary) else {
                    return Err(ManagerError::Foreign {
                        path: self.path.clone(),
                        what: format!("the row of {path} does not hold a tvck summary"),
                    });
                };
                let names = by_path.get(path.as_str()).cloned().unwrap_or_default();
                out.push(Entry {
                    id,
                    path,
                    stat,
                    modified: u64::try_from(stat.mtime_ns / 1_000_000_000).unwrap_or(0),
                    summary,
                    migration: migration.and_then(|m| serde_json::from_str(&m).ok()),
                    aliases: names,
                });
            }
            Ok(())
        };
        if ranges.is_empty() {
            read(&format!("{COLUMNS} WHERE {cond} ORDER BY path"), &[])?;
        } else {
            // Two queries, not one with OR: each walks the path index in order (an OR
            // makes SQLite scan the table and sort the rows, summaries and all).
            let exact_sql = format!("{COLUMNS} WHERE path = ?1 AND ({cond})");
            let range_sql =
                format!("{COLUMNS} WHERE path >= ?1 AND path < ?2 AND ({cond}) ORDER BY path");
            for (exact, lo, hi) in &ranges {
                read(&exact_sql, &[exact])?;
                read(&range_sql, &[lo, hi])?;
            }
        }
        if !ranges.is_empty() {
            // A root's own row comes before the rows below it; several roots interleave.
            out.sort_by(|a, b| a.path.cmp(&b.path));
        }
        Ok(out)
    }

    /// (path, stat) of every indexed file under `root`, without decoding any summary.
    pub fn stats_under(&self, root: &Path) -> Result<HashMap<String, Stat>, ManagerError> {
        let t = path_text(&root.canonicalize().unwrap_or_else(|_| root.to_path_buf()));
        let base = t.trim_end_matches('/').to_string();
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT path, size, mtime_ns, inode FROM files WHERE path = ?1
                 UNION ALL
                 SELECT path, size, mtime_ns, inode FROM files WHERE path >= ?2 AND path < ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![t, format!("{base}/"), format!("{base}0")], |r| {
                Ok((r.get::<_, String>(0)?, Stat::from_row(r, 1)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Whether the index holds exactly the checkpoints `paths` (discovered under `root`),
    /// each unchanged: every one indexed with its current (size, mtime, inode), and no
    /// indexed file under `root` that the walk did not find. Reads only the stat columns.
    pub fn is_fresh(&self, root: &Path, paths: &[PathBuf]) -> Result<bool, ManagerError> {
        let Ok(canon) = root.canonicalize() else {
            return Ok(false);
        };
        let known = self.stats_under(&canon)?;
        if known.len() != paths.len() {
            return Ok(false);
        }
        for p in paths {
            let rel = p.strip_prefix(root).unwrap_or(p);
            let abs = if rel.as_os_str().is_empty() {
                canon.clone()
            } else {
                canon.join(rel)
            };
            match known.get(&path_text(&abs)) {
                Some(s) if Stat::of(p).ok() == Some(*s) => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// The model state's (key, shape) list of an indexed file (empty when it has no model
    /// state), in key order.
    pub fn state_shapes(&self, entry: &Entry) -> Result<Vec<crate::arch::KeyShape>, ManagerError> {
        if entry.summary.model_state_key.is_none() {
            return Ok(Vec::new());
        }
        Ok(self
            .tensors(entry.id)?
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect())
    }

    /// The fingerprinted tensors of an indexed file, by name.
    pub fn tensors(&self, file_id: i64) -> Result<Vec<TensorRow>, ManagerError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT name, dtype, shape, hash FROM tensors WHERE file_id = ?1 ORDER BY name",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([file_id], |r| {
                let shape: String = r.get(2)?;
                let hash: Vec<u8> = r.get(3)?;
                Ok(TensorRow {
                    name: r.get(0)?,
                    dtype: r.get(1)?,
                    shape: serde_json::from_str(&shape).unwrap_or_default(),
                    hash: hash.try_into().unwrap_or([0; 32]),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The entries of every checkpoint of `paths` (discovered under `root`), when the
    /// index holds every one of them unchanged; `None` when any file is missing from the
    /// index or changed since (the caller reads the files instead).
    pub fn fresh_entries(
        &self,
        root: &Path,
        paths: &[PathBuf],
    ) -> Result<Option<Vec<Entry>>, ManagerError> {
        let Ok(canon) = root.canonicalize() else {
            return Ok(None);
        };
        let mut by_path: HashMap<String, Entry> = self
            .entries(std::slice::from_ref(&canon))?
            .into_iter()
            .map(|e| (e.path.clone(), e))
            .collect();
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            // discover() walks from `root` as given; the index from its canonical form.
            let rel = p.strip_prefix(root).unwrap_or(p);
            let abs = if rel.as_os_str().is_empty() {
                canon.clone()
            } else {
                canon.join(rel)
            };
            let Some(e) = by_path.remove(&path_text(&abs)) else {
                return Ok(None);
            };
            if Stat::of(p).ok() != Some(e.stat) {
                return Ok(None);
            }
            out.push(e);
        }
        Ok(Some(out))
    }

    /// The summaries of every checkpoint of `paths` (discovered under `root`) as `scan`
    /// would produce them (paths relative to `root`), from [`Index::fresh_entries`].
    /// Without `hash` the fingerprints are left out, and a file whose hashing failed makes
    /// the index unusable (a plain scan does not report that failure).
    pub fn fresh_summaries(
        &self,
        root: &Path,
        paths: &[PathBuf],
        hash: bool,
    ) -> Result<Option<Vec<FileSummary>>, ManagerError> {
        let Some(entries) = self.fresh_entries(root, paths)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(entries.len());
        for (e, p) in entries.into_iter().zip(paths) {
            let mut s = e.summary;
            if !hash {
                if s.error
                    .as_deref()
                    .is_some_and(|m| m.starts_with(scan::HASHING_FAILED))
                {
                    return Ok(None);
                }
                s.fingerprint = None;
            }
            s.path = crate::discover::relative(root, p);
            out.push(s);
        }
        Ok(Some(out))
    }
}

/// One indexed tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorRow {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    #[serde(serialize_with = "hex_hash")]
    pub hash: [u8; 32],
}

fn hex_hash<S: serde::Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(h))
}

/// The record of one file the hashing workers read.
fn record(path: &str, stat: Stat, r: scan::Hashed<'_, '_>) -> Record {
    match r {
        Ok((ckpt, model_state, fp)) => {
            let mut summary = scan::describe(ckpt, path.to_string(), model_state);
            let tensors = match &fp {
                Ok(fp) => fp
                    .tensors
                    .iter()
                    .map(|t| {
                        let info = &ckpt.tensors[t.index];
                        (
                            t.name.clone(),
                            info.dtype.torch_name(),
                            serde_json::to_string(&info.shape).expect("a shape serializes"),
                            t.hash,
                        )
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            scan::set_fingerprint(&mut summary, fp);
            let migration = ckpt
                .root
                .get(crate::metrics::MIGRATION)
                .map(|m| crate::format::value::value_json(m, &ckpt.tensors).to_string());
            Record {
                path: path.to_string(),
                stat,
                summary,
                migration,
                tensors,
            }
        }
        Err(e) => Record {
            path: path.to_string(),
            stat,
            summary: FileSummary::unreadable(
                path.to_string(),
                stat.size,
                e.source.message_without_file(),
            ),
            migration: None,
            tensors: Vec::new(),
        },
    }
}
