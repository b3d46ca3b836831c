//! The index database (schema version 4): per checkpoint file a `files` row (its stat,
//! fingerprint, layout and a column per query field, [`query::FIELDS`]), a `details` row
//! (its scan summary and its migration record) and a `hashes` row (the SHA-256 of each
//! fingerprinted tensor's logical bytes). A `layouts` row holds a tensor list's names,
//! dtypes and shapes once for every file that has it: the epochs of a run share one.
//!
//! * A `meta` table names the application and the schema version; a database without it
//!   that holds any table is foreign, a file that is not SQLite is corrupt: both are errors
//!   and the file is left as it is. An index of an older version is upgraded in place by
//!   the first writer that opens it (one transaction); a reader refuses it with
//!   [`ManagerError::OlderSchema`].
//! * [`Index::update`] takes the write lock first (`BEGIN IMMEDIATE`: a second indexer
//!   waits up to the busy timeout, then fails with [`ManagerError::Locked`]), walks the
//!   roots, reads only files whose (size, mtime, inode) changed, moves the row of a renamed
//!   file (same stat, new path) without reading it, drops rows of files that vanished and
//!   commits once: a failed or killed run leaves the previous index whole.
//! * [`Index::query`] runs `--where`, `--sort` and `--limit` in SQL over the query columns
//!   and decodes only the rows it returns; [`Index::is_fresh_tree`] says whether the index
//!   holds exactly the files under a folder, each unchanged (one walk, a `stat` per file,
//!   the rows' stat columns; no file opened, no summary decoded).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::source::Source;
use super::{query, ManagerError};
use crate::arch::{KeyShape, VersionId};
use crate::metrics::{Provenance, StoredMetrics};
use crate::scan::{self, FileSummary};

/// The schema this tvck writes and reads. Version 1 kept the summary in the `files` row
/// and a row per tensor; version 2 kept each file's whole tensor list (names, dtypes,
/// shapes and hashes) in its `details` row; version 3 its tensor hashes there (32 bytes a
/// tensor, most of the row: reading the summaries of a query's rows walked pages of
/// hashes), and its `files` in rowid order (a lookup from the path index into the table
/// per row under a folder). An index of version 1, 2 or 3 is upgraded in place by the
/// first writer that opens it ([`Index::open`]), in one transaction.
pub const SCHEMA_VERSION: i64 = 4;
/// `meta.application` of a tvck index.
const APPLICATION: &str = "tvck-index";

/// The `files` table: a file's stat, its tensor list's layout (`layout_id`, NULL when it has
/// none; `has_state` when that list is a model state), and a column per query field
/// (`f_…`, what [`query::Fields`] says of the file: `ls --where`/`--sort` and `select` run
/// in SQL over these, no summary decoded). The summary and the
/// migration record live in `details`, read only for the rows a command returns, and the
/// tensor hashes in `hashes`, read only for a file's tensors; `layouts` holds each
/// distinct tensor list ([`encode_layout`]) once.
fn files_table() -> String {
    format!(
        "{}{DETAILS_TABLE}{HASHES_TABLE}{LAYOUTS_TABLE}",
        files_only_table("files")
    )
}

/// The `files` table alone, named `name`, and its `files_walk` index. Since version 4 it
/// is kept in path order (`WITHOUT ROWID`, keyed by path; `id`, unique, is what the other
/// tables point to): the rows under a folder are one run of the table, no lookup from a
/// path index into it per row.
fn files_only_table(name: &str) -> String {
    let mut cols = String::new();
    for (field, kind) in query::stored_fields() {
        let ty = match kind {
            query::Kind::Number => "REAL",
            query::Kind::Text => "TEXT",
            query::Kind::Flag => "INTEGER NOT NULL",
        };
        cols.push_str(&format!(
            ",\n    {} {ty}",
            query::column(field).expect("stored")
        ));
    }
    format!(
        "CREATE TABLE {name} (
    id INTEGER NOT NULL UNIQUE,
    path TEXT NOT NULL PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    fingerprint TEXT,
    indexed_at INTEGER NOT NULL,
    layout_id INTEGER,
    has_state INTEGER NOT NULL{cols}
) WITHOUT ROWID;
CREATE INDEX files_walk ON {name}(path, size, mtime_ns, inode, f_unreadable, f_unsafe);
"
    )
}

/// The `layouts` table.
const LAYOUTS_TABLE: &str = "CREATE TABLE layouts (
    id INTEGER PRIMARY KEY,
    tensors BLOB NOT NULL UNIQUE
);
";

/// The `details` table (since version 4 without the hashes).
const DETAILS_TABLE: &str = "CREATE TABLE details (
    file_id INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
    summary TEXT NOT NULL,
    migration TEXT
);
";

/// The `hashes` table: a file's tensor hashes, in its layout's order (since version 4).
const HASHES_TABLE: &str = "CREATE TABLE hashes (
    file_id INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
    hashes BLOB NOT NULL
);
";

/// Version 3 to 4, in SQL alone, after `files` and `details` renamed out of the way
/// (`files_v3`, `details_v3`) and this version's `files`, `details` and `hashes` made: the
/// rows copied in path order into the new `files`, the summaries and migration records
/// into the new `details` (packed: dropping the column in place would leave each page as
/// sparse as the hashes made it), the hashes into `hashes`. `{columns}` is every column
/// of `files`.
const UPGRADE_3_TO_4: &str = "
INSERT INTO files({columns}) SELECT {columns} FROM files_v3 ORDER BY path;
INSERT INTO details(file_id, summary, migration)
    SELECT file_id, summary, migration FROM details_v3 ORDER BY file_id;
INSERT INTO hashes(file_id, hashes) SELECT file_id, hashes FROM details_v3 ORDER BY file_id;
DROP TABLE details_v3;
DROP TABLE files_v3;
";

/// The tables besides `files`, `details` and `layouts` (the same since version 1).
const OTHER_TABLES: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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

/// Every column of `files`, in order: id, path, stat, fingerprint, time, layout, then the
/// query columns in [`query::stored_fields`] order.
fn files_columns() -> Vec<String> {
    [
        "id",
        "path",
        "size",
        "mtime_ns",
        "inode",
        "fingerprint",
        "indexed_at",
        "layout_id",
        "has_state",
    ]
    .into_iter()
    .map(String::from)
    .chain(query::stored_fields().map(|(f, _)| query::column(f).expect("stored")))
    .collect()
}

/// The `INSERT` of a `files` row, its values in [`files_columns`] order.
fn insert_file_sql() -> String {
    let names = files_columns();
    let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO files({}) VALUES ({})",
        names.join(", "),
        marks.join(", ")
    )
}

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

pub use crate::discover::Stat;

impl Stat {
    /// The `size, mtime_ns, inode` columns of a `files` row, from column `first` on.
    fn from_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Stat> {
        Ok(Stat {
            size: r.get::<_, i64>(first)? as u64,
            mtime_ns: r.get(first + 1)?,
            inode: r.get::<_, i64>(first + 2)? as u64,
        })
    }
}

/// One indexed checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    #[serde(skip)]
    pub id: i64,
    /// Absolute path (the indexed root canonicalized, then the walk's path). In JSON it is
    /// the summary's `path`, which is the same.
    #[serde(skip)]
    pub path: String,
    #[serde(skip)]
    pub stat: Stat,
    /// The scan summary (its `path` is the absolute path too: [`Entry::new`] makes it so,
    /// whatever the stored summary says), fingerprint included.
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

impl Entry {
    /// The entry of an indexed row.
    fn new(
        id: i64,
        path: String,
        stat: Stat,
        mut summary: FileSummary,
        migration: Option<&str>,
        aliases: Vec<String>,
    ) -> Entry {
        summary.path.clone_from(&path);
        Entry {
            id,
            path,
            stat,
            modified: u64::try_from(stat.mtime_ns / 1_000_000_000).unwrap_or(0),
            summary,
            migration: migration.and_then(|m| serde_json::from_str(m).ok()),
            aliases,
        }
    }
}

/// A read transaction of the index ([`Index::reading`]), ended when dropped (it writes
/// nothing: ending it is a rollback).
pub struct Reading<'a> {
    _transaction: Option<rusqlite::Transaction<'a>>,
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

/// A row of the index met by [`Index::update`].
struct Known {
    id: i64,
    stat: Stat,
    unreadable: bool,
    unsafe_globals: bool,
    /// Its path was found by the walk.
    present: bool,
}

/// A file read for the index.
struct Record {
    path: String,
    stat: Stat,
    summary: FileSummary,
    migration: Option<String>,
    /// Every fingerprinted tensor.
    tensors: Vec<TensorRow>,
}

/// Writes the rows of the files read for the index, its statements prepared once (a
/// statement cache looked up by its SQL text hashed that text for every file).
struct Writer<'c> {
    conn: &'c Connection,
    files: rusqlite::Statement<'c>,
    details: rusqlite::Statement<'c>,
    hashes: rusqlite::Statement<'c>,
    find_layout: rusqlite::Statement<'c>,
    add_layout: rusqlite::Statement<'c>,
    /// The ids of the `layouts` rows met, by their bytes: a run's files share a layout, so
    /// most files need no lookup in the database.
    layouts: HashMap<Vec<u8>, i64>,
    /// The last layout met (most files have their neighbour's: compared before hashing).
    last_layout: Option<(Vec<u8>, i64)>,
    /// The id of the next new row: one more than the largest when the writer was made
    /// (what SQLite gives a new rowid), counted here rather than looked up per row.
    next_id: i64,
}

impl<'c> Writer<'c> {
    fn new(conn: &'c Connection) -> rusqlite::Result<Writer<'c>> {
        Ok(Writer {
            conn,
            files: conn.prepare(&insert_file_sql())?,
            details: conn
                .prepare("INSERT INTO details(file_id, summary, migration) VALUES (?1, ?2, ?3)")?,
            hashes: conn.prepare("INSERT INTO hashes(file_id, hashes) VALUES (?1, ?2)")?,
            find_layout: conn.prepare("SELECT id FROM layouts WHERE tensors = ?1")?,
            add_layout: conn.prepare("INSERT INTO layouts(tensors) VALUES (?1)")?,
            layouts: HashMap::new(),
            last_layout: None,
            next_id: conn.query_row("SELECT coalesce(max(id), 0) + 1 FROM files", [], |r| {
                r.get(0)
            })?,
        })
    }

    /// The `layouts` row of a tensor list's layout bytes: the one there, or a new one.
    fn layout_id(&mut self, layout: Vec<u8>) -> rusqlite::Result<i64> {
        if let Some((last, id)) = &self.last_layout {
            if *last == layout {
                return Ok(*id);
            }
        }
        let id = match self.layouts.get(&layout) {
            Some(id) => *id,
            None => {
                let id = match self
                    .find_layout
                    .query_row([&layout], |r| r.get(0))
                    .optional()?
                {
                    Some(id) => id,
                    None => {
                        self.add_layout.execute([&layout])?;
                        self.conn.last_insert_rowid()
                    }
                };
                self.layouts.insert(layout.clone(), id);
                id
            }
        };
        self.last_layout = Some((layout, id));
        Ok(id)
    }

    /// Write the rows of one file read for the index: its `files` row (with `id`, or a new
    /// one), its `details` and `hashes`, and its layout when it is new.
    fn insert(
        &mut self,
        id: Option<i64>,
        mut rec: Record,
        indexed_at: i64,
    ) -> rusqlite::Result<()> {
        use rusqlite::types::Value;
        let summary = serde_json::to_string(&rec.summary).expect("a summary serializes");
        let (layout, hashes) = encode_layout(&mut rec.tensors);
        let layout = match layout {
            Some(l) => Value::Integer(self.layout_id(l)?),
            None => Value::Null,
        };
        let has_state = rec.summary.model_state_key.is_some();
        let entry = Entry::new(
            0,
            rec.path,
            rec.stat,
            rec.summary,
            rec.migration.as_deref(),
            Vec::new(),
        );
        let id = id.unwrap_or_else(|| {
            self.next_id += 1;
            self.next_id - 1
        });
        let mut values = vec![
            Value::Integer(id),
            Value::Text(entry.path.clone()),
            Value::Integer(entry.stat.size as i64),
            Value::Integer(entry.stat.mtime_ns),
            Value::Integer(entry.stat.inode as i64),
            entry
                .summary
                .fingerprint
                .clone()
                .map_or(Value::Null, Value::Text),
            Value::Integer(indexed_at),
            layout,
            Value::Integer(i64::from(has_state)),
        ];
        values.extend(query::stored_fields().map(|(f, k)| query::column_value(&entry, f, k)));
        self.files.execute(rusqlite::params_from_iter(values))?;
        self.details.execute(params![id, summary, rec.migration])?;
        self.hashes.execute(params![id, hashes])?;
        Ok(())
    }
}

/// A file's tensor list as the index holds it, sorted by name: its layout as a `layouts`
/// row holds it (per tensor, in name order, the name and the dtype, each a u32 byte length
/// and UTF-8, then the shape, a u32 rank and a u64 per dimension; integers little-endian;
/// `None` for an empty list), and the 32-byte hashes in the same order, as `hashes.hashes`
/// holds them. Thousands of epochs of a run have one layout: version 2 wrote the names and
/// shapes once per file, most of its index.
fn encode_layout(tensors: &mut [TensorRow]) -> (Option<Vec<u8>>, Vec<u8>) {
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    if tensors.is_empty() {
        return (None, Vec::new());
    }
    let mut layout = Vec::with_capacity(tensors.len() * 64);
    let mut hashes = Vec::with_capacity(tensors.len() * 32);
    for t in tensors.iter() {
        encode_meta(&mut layout, t);
        hashes.extend_from_slice(&t.hash);
    }
    (Some(layout), hashes)
}

/// One tensor's name, dtype and shape, as [`encode_layout`] writes them.
fn encode_meta(out: &mut Vec<u8>, t: &TensorRow) {
    let u32_le = |out: &mut Vec<u8>, n: usize| {
        out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes())
    };
    u32_le(out, t.name.len());
    out.extend_from_slice(t.name.as_bytes());
    u32_le(out, t.dtype.len());
    out.extend_from_slice(t.dtype.as_bytes());
    u32_le(out, t.shape.len());
    for d in &t.shape {
        out.extend_from_slice(&d.to_le_bytes());
    }
}

/// Reads the encodings of [`encode_layout`] (and of version 2's tensor lists): every
/// read is bounds-checked, and a list that is not such bytes is `None`.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn len(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
    fn text(&mut self) -> Option<String> {
        let n = self.len()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    /// A name, a dtype and a shape.
    fn meta(&mut self) -> Option<(String, String, Vec<u64>)> {
        let name = self.text()?;
        let dtype = self.text()?;
        let rank = self.len()?;
        let dims = self.take(rank.checked_mul(8)?)?;
        let shape = dims
            .chunks_exact(8)
            .map(|d| u64::from_le_bytes(d.try_into().expect("8 bytes")))
            .collect();
        Some((name, dtype, shape))
    }
    fn hash(&mut self) -> Option<[u8; 32]> {
        self.take(32)?.try_into().ok()
    }
}

/// A layout's (name, dtype, shape) list, [`encode_layout`] read back.
fn decode_layout(b: &[u8]) -> Option<Vec<(String, String, Vec<u64>)>> {
    let mut r = Reader(b);
    let mut out = Vec::new();
    while !r.0.is_empty() {
        out.push(r.meta()?);
    }
    Some(out)
}

/// A file's tensors from its layout and its hashes; `None` unless there is a hash per
/// tensor.
fn join_layout(layout: Vec<(String, String, Vec<u64>)>, hashes: &[u8]) -> Option<Vec<TensorRow>> {
    if hashes.len() != layout.len().checked_mul(32)? {
        return None;
    }
    Some(
        layout
            .into_iter()
            .zip(hashes.chunks_exact(32))
            .map(|((name, dtype, shape), h)| TensorRow {
                name,
                dtype,
                shape,
                hash: h.try_into().expect("32 bytes"),
            })
            .collect(),
    )
}

/// A version-2 `details.tensors` list (per tensor, the layout's encoding then the hash),
/// read for the upgrade.
fn decode_tensors_v2(b: &[u8]) -> Option<Vec<TensorRow>> {
    let mut r = Reader(b);
    let mut out = Vec::new();
    while !r.0.is_empty() {
        let (name, dtype, shape) = r.meta()?;
        let hash = r.hash()?;
        out.push(TensorRow {
            name,
            dtype,
            shape,
            hash,
        });
    }
    Some(out)
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Every checkpoint under the canonical `root` now, (path text, stat), and what the walk
/// met and did not read: [`crate::discover::discover_regular`] for a tree of plain folders
/// and files, else [`crate::discover::discover`] and a `stat` of each file found (links
/// followed), in parallel. A file gone between the walk and its stat is not there.
fn stats_now(root: &Path) -> (Vec<(PathBuf, String, Stat)>, Vec<scan::Skipped>) {
    use rayon::prelude::*;
    let found = crate::discover::discover_regular(root, |p, stat| {
        let t = path_text(&p);
        (p, t, stat)
    });
    if let Some(found) = found {
        return (found, Vec::new());
    }
    let d = crate::discover::discover(root, crate::discover::Walk::everything());
    let found = d
        .files
        .into_par_iter()
        .filter_map(|p| {
            let s = Stat::of(&p).ok()?;
            let t = path_text(&p);
            Some((p, t, s))
        })
        .collect();
    (found, d.skipped)
}

/// Whether the index's `rows` (path text, stat; in path order) are the files `now`, one
/// for one (`now` is sorted here).
fn same_files(rows: &[(String, Stat)], mut now: Vec<(String, Stat)>) -> bool {
    use rayon::slice::ParallelSliceMut;
    if rows.len() != now.len() {
        return false;
    }
    // (On the pool's threads: the walk that made `now` has ended, and 20,000 paths take
    // milliseconds to sort on one.)
    now.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
    rows == now.as_slice()
}

/// [`stats_now`] for a freshness check: the path texts alone (each walked path's own
/// buffer when it is UTF-8).
fn texts_now(root: &Path) -> Vec<(String, Stat)> {
    let text = |p: PathBuf| {
        p.into_os_string()
            .into_string()
            .unwrap_or_else(|os| os.to_string_lossy().into_owned())
    };
    crate::discover::discover_regular(root, |p, stat| (text(p), stat)).unwrap_or_else(|| {
        stats_now(root)
            .0
            .into_iter()
            .map(|(_, t, s)| (t, s))
            .collect()
    })
}

/// A root as the index holds it (canonical), or as given when it cannot be resolved.
fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// The rows of a (canonical) root: its own path, and the range of paths below it
/// (`root/` ≤ path < `root0`, `0` following `/`).
fn root_range(root: &Path) -> (String, String, String) {
    let t = path_text(root);
    let base = t.trim_end_matches('/').to_string();
    (t, format!("{base}/"), format!("{base}0"))
}

/// The two parts of the rows under the canonical `root`, in path order: `root` itself,
/// then the paths below it. Each as an SQL condition on `path` (over `?1` and `?2`), the
/// SQL of `filter` (`1` without one; its values numbered from `?3`), and the values of
/// both.
fn root_parts(
    root: &Path,
    filter: Option<&super::Query>,
) -> [(&'static str, String, Vec<rusqlite::types::Value>); 2] {
    use rusqlite::types::Value;
    let (exact, lo, hi) = root_range(root);
    [
        ("path >= ?1 AND path <= ?2", exact.clone(), exact),
        ("path >= ?1 AND path < ?2", lo, hi),
    ]
    .map(|(under, a, b)| {
        let mut args = vec![Value::Text(a), Value::Text(b)];
        let cond = filter.map_or_else(|| "1".to_string(), |q| q.to_sql(&mut args));
        (under, cond, args)
    })
}

/// The SQL condition selecting the rows under (canonical) `roots` (every row when there
/// are none), its values appended to `params`.
fn roots_sql(roots: &[PathBuf], params: &mut Vec<rusqlite::types::Value>) -> String {
    use rusqlite::types::Value;
    if roots.is_empty() {
        return "1".into();
    }
    let mut any = Vec::new();
    for r in roots {
        let (exact, lo, hi) = root_range(r);
        params.extend([Value::Text(exact), Value::Text(lo), Value::Text(hi)]);
        let n = params.len();
        any.push(format!(
            "path = ?{} OR (path >= ?{} AND path < ?{n})",
            n - 2,
            n - 1
        ));
    }
    format!("({})", any.join(" OR "))
}

/// The condition a `files` row of a selection candidate meets: a TernaryVAE version, read
/// without error, no unsafe global.
const CANDIDATE: &str = "f_version IS NOT NULL AND f_unreadable = 0 AND f_unsafe = 0";

/// A row's model-state layout: its layout when its tensor list is a model state, else NULL
/// (what a candidate's shapes are read from).
const STATE_LAYOUT: &str = "CASE WHEN has_state THEN layout_id END";

/// Column `i` of a row as text read in place (no copy), `None` for NULL.
fn text_at<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<&'r str>> {
    r.get_ref(i)?.as_str_or_null().map_err(Into::into)
}

/// The model-state shapes of a row whose `STATE_LAYOUT` column is `state_layout`, from the
/// index's layouts (`none` when it has no model state); `None` when the row names a layout
/// the index does not hold.
fn state_shapes_of(
    layouts: &HashMap<i64, Arc<[KeyShape]>>,
    none: &Arc<[KeyShape]>,
    state_layout: Option<i64>,
) -> Option<Arc<[KeyShape]>> {
    match state_layout {
        Some(id) => layouts.get(&id).cloned(),
        None => Some(none.clone()),
    }
}

/// What a ranking reads of one candidate row ([`Index::fresh_candidate_rows`]).
pub(crate) struct CandidateRow<'r> {
    /// Its place among the rows under the root, in path order.
    pub row: usize,
    /// The `f_version` column (a version this tvck's catalog may not name).
    pub version: &'r str,
    /// The `f_layout` column (the layout's summary, as [`Source::layout`]).
    pub layout: &'r str,
    /// The model state's (key, shape) list (shared by the rows of one layout; empty: no
    /// model state).
    pub shapes: &'r Arc<[KeyShape]>,
    /// The metrics asked for, and the provenance.
    pub metrics: StoredMetrics,
    /// Seconds since the Unix epoch.
    pub modified: u64,
}

/// Reads [`Source`]s from `files` rows: the `SELECT` list (`id, path` first) and each
/// row's source, with the index's layouts and aliases read once and one shared text per
/// layout summary.
struct SourceReader<'i> {
    index: &'i Index,
    /// `SELECT …` of the columns (no `FROM`).
    select: String,
    /// How many columns it lists.
    columns: usize,
    metrics: Vec<&'static str>,
    layouts: HashMap<i64, Arc<[KeyShape]>>,
    aliases: HashMap<String, Vec<String>>,
    layout_texts: Vec<Arc<str>>,
    none: Arc<[KeyShape]>,
}

impl<'i> SourceReader<'i> {
    fn new(index: &'i Index) -> Result<SourceReader<'i>, ManagerError> {
        let metrics: Vec<&'static str> = query::stored_fields()
            .filter(|(f, k)| {
                *k == query::Kind::Number && StoredMetrics::default().by_name_mut(f).is_some()
            })
            .map(|(f, _)| f)
            .collect();
        let mut select = format!(
            "SELECT id, path, mtime_ns, f_version, f_layout, f_provenance, f_epoch, f_size,
                    f_converted, {STATE_LAYOUT}"
        );
        for m in &metrics {
            select.push_str(", ");
            select.push_str(&query::column(m).expect("stored"));
        }
        Ok(SourceReader {
            index,
            select,
            columns: 10 + metrics.len(),
            metrics,
            layouts: index.state_layouts()?,
            aliases: index.aliases_by_path()?,
            layout_texts: Vec::new(),
            none: Arc::from(Vec::new()),
        })
    }

    /// The source of a row of [`SourceReader::select`] whose path is `path`; `None` for a
    /// version this tvck's catalog does not name (an index written by another release).
    fn source(
        &mut self,
        r: &rusqlite::Row<'_>,
        path: String,
    ) -> Result<Option<Source>, ManagerError> {
        let get = |e| self.index.err(e);
        // Text columns are read in place (no allocation per row) where they are parsed or
        // shared.
        let text = |i: usize| text_at(r, i).map_err(get);
        let Some(version) = text(3)?.and_then(|v| v.parse::<VersionId>().ok()) else {
            return Ok(None);
        };
        let mtime_ns: i64 = r.get(2).map_err(get)?;
        let mut m = StoredMetrics {
            provenance: text(5)?.and_then(Provenance::parse),
            ..StoredMetrics::default()
        };
        for (i, name) in self.metrics.iter().enumerate() {
            *m.by_name_mut(name).expect("a metric") = r.get(10 + i).map_err(get)?;
        }
        let shapes = state_shapes_of(&self.layouts, &self.none, r.get(9).map_err(get)?)
            .ok_or_else(|| self.index.missing_layout(&path))?;
        let layout_text = text(4)?.unwrap_or_default();
        let layout = match self.layout_texts.iter().find(|l| &***l == layout_text) {
            Some(l) => l.clone(),
            None => {
                let l: Arc<str> = Arc::from(layout_text);
                self.layout_texts.push(l.clone());
                l
            }
        };
        Ok(Some(Source {
            // (Most trees have no alias: a lookup in an empty map hashes nothing.)
            aliases: self.aliases.get(&path).cloned().unwrap_or_default(),
            path: PathBuf::from(path),
            version,
            layout,
            shapes,
            metrics: m,
            epoch: r.get::<_, Option<f64>>(6).map_err(get)?.map(|e| e as i64),
            size: r
                .get::<_, Option<f64>>(7)
                .map_err(get)?
                .map_or(0, |s| s as u64),
            converted: r.get(8).map_err(get)?,
            modified: Some(u64::try_from(mtime_ns / 1_000_000_000).unwrap_or(0)),
        }))
    }
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

    /// The error for a row naming a layout the index does not hold.
    fn missing_layout(&self, path: &str) -> ManagerError {
        ManagerError::Foreign {
            path: self.path.clone(),
            what: format!("the row of {path} names a layout it does not hold"),
        }
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

    /// The page cache of [`Index::prepare`], in SQLite's units (negative: KiB).
    const CACHE_SIZE: i64 = -8192;

    /// Check the schema; create it in an empty database when `create`.
    fn prepare(&mut self, create: bool) -> Result<(), ManagerError> {
        self.conn
            .busy_timeout(self.busy_timeout)
            .map_err(|e| self.err(e))?;
        self.conn
            .pragma_update(None, "foreign_keys", true)
            .map_err(|e| self.err(e))?;
        // A page cache of up to 8 MB (SQLite's default is 2 MB). A first indexing appends
        // (rows and indexes in path order, no random-key index any more), so the pages it
        // spills to the WAL mid-transaction are written once, by the writer thread while
        // the files are still being hashed, and the commit at the end has less to write.
        // Sorts and temporary tables stay in memory; pages are read through a memory map
        // (no system call per page).
        self.conn
            .pragma_update(None, "cache_size", Self::CACHE_SIZE)
            .map_err(|e| self.err(e))?;
        let _: i64 = self
            .conn
            .query_row("PRAGMA mmap_size = 268435456", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        // With the write-ahead log, NORMAL still commits atomically (a crash or a killed
        // run leaves the previous index whole); only the last commit may be lost on a
        // power failure, and the index is a cache of the files.
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
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
            // Pages of 16 kB (SQLite's default is 4 kB): a quarter of the pages to write,
            // log and check-point for a first indexing (it applies to an empty file only).
            self.conn
                .pragma_update(None, "page_size", 16384)
                .map_err(|e| self.err(e))?;
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| ManagerError::db(&self.path, e))?;
            // Someone else may have created it between our look and the lock.
            let n: i64 = tx
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(|e| ManagerError::db(&self.path, e))?;
            if n == 0 {
                tx.execute_batch(&format!("{OTHER_TABLES}{}", files_table()))
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
            self.use_wal()?;
            return self.check_meta().map(|_| ());
        }
        if tables.is_empty() {
            return Err(ManagerError::Foreign {
                path: self.path.clone(),
                what: "an empty database".into(),
            });
        }
        let version = self.check_meta()?;
        if version < SCHEMA_VERSION {
            if !create {
                return Err(ManagerError::OlderSchema {
                    path: self.path.clone(),
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            self.upgrade()?;
            // The old tables' pages, given back to the file system. Best effort: another
            // process reading the index at this moment keeps them for now (SQLite reuses
            // free pages).
            let _ = self.conn.execute_batch("VACUUM");
        }
        if create {
            // A first indexing that was killed leaves the file in the rollback journal's
            // mode ([`Index::begin_first_build`]).
            self.use_wal()?;
        }
        Ok(())
    }

    /// Upgrade an index of an older schema version to this one, in one transaction (a
    /// failure leaves it as it was). From version 1 or 2, each file's rows are written
    /// again as [`Index::update`] writes them (summary, migration record, query columns,
    /// layout and hashes), with the same ids, from what the old rows hold; from version 3,
    /// the hashes move out of `details` in SQL ([`UPGRADE_3_TO_4`]). No checkpoint is
    /// read. Aliases, their history and the prune audit stay.
    fn upgrade(&mut self) -> Result<(), ManagerError> {
        let path = self.path.clone();
        let busy = self.busy_timeout.as_millis().min(u64::MAX as u128) as u64;
        let db = |e: rusqlite::Error| {
            if e.sqlite_error_code() == Some(rusqlite::ffi::ErrorCode::DatabaseBusy) {
                ManagerError::Locked {
                    path: path.clone(),
                    waited_ms: busy,
                }
            } else {
                ManagerError::db(&path, e)
            }
        };
        // The rows moved: this version named, committed.
        let finish = |tx: rusqlite::Transaction<'_>| {
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
                [SCHEMA_VERSION.to_string()],
            )
            .map_err(db)?;
            tx.commit().map_err(db)
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        // Another writer may have upgraded it between our look and the lock.
        let version: String = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        // The old rows, renamed out of the way, and how to read a file's from them: its
        // id, path, stat, summary, migration and indexing time, then its tensors.
        let (rename, files_sql, tensors_sql, drop) = match version.as_str() {
            "1" => (
                "DROP INDEX IF EXISTS files_fingerprint;
                 DROP INDEX IF EXISTS tensors_hash;
                 ALTER TABLE files RENAME TO files_v1;
                 ALTER TABLE tensors RENAME TO tensors_v1;",
                "SELECT id, path, size, mtime_ns, inode, summary, migration, indexed_at
                 FROM files_v1 ORDER BY id",
                "SELECT name, dtype, shape, hash FROM tensors_v1 WHERE file_id = ?1",
                "DROP TABLE tensors_v1; DROP TABLE files_v1;",
            ),
            "2" => (
                "DROP INDEX IF EXISTS files_walk;
                 ALTER TABLE files RENAME TO files_v2;
                 ALTER TABLE details RENAME TO details_v2;",
                "SELECT id, path, size, mtime_ns, inode, details_v2.summary, details_v2.migration,
                        indexed_at
                 FROM files_v2 JOIN details_v2 ON details_v2.file_id = files_v2.id ORDER BY id",
                "SELECT tensors FROM details_v2 WHERE file_id = ?1",
                "DROP TABLE details_v2; DROP TABLE files_v2;",
            ),
            "3" => {
                tx.execute_batch(
                    "DROP INDEX files_walk;
                     ALTER TABLE files RENAME TO files_v3;
                     ALTER TABLE details RENAME TO details_v3;",
                )
                .map_err(db)?;
                tx.execute_batch(&format!(
                    "{}{DETAILS_TABLE}{HASHES_TABLE}",
                    files_only_table("files")
                ))
                .map_err(db)?;
                let columns = files_columns().join(", ");
                tx.execute_batch(&UPGRADE_3_TO_4.replace("{columns}", &columns))
                    .map_err(db)?;
                return finish(tx);
            }
            _ => return tx.commit().map_err(db),
        };
        tx.execute_batch(rename).map_err(db)?;
        tx.execute_batch(&files_table()).map_err(db)?;
        {
            let mut writer = Writer::new(&tx).map_err(db)?;
            let mut files = tx.prepare(files_sql).map_err(db)?;
            let mut tensors = tx.prepare(tensors_sql).map_err(db)?;
            let mut rows = files.query([]).map_err(db)?;
            while let Some(r) = rows.next().map_err(db)? {
                let id: i64 = r.get(0).map_err(db)?;
                let file: String = r.get(1).map_err(db)?;
                let summary: String = r.get(5).map_err(db)?;
                let Ok(summary) = serde_json::from_str::<FileSummary>(&summary) else {
                    return Err(ManagerError::Foreign {
                        path: path.clone(),
                        what: format!("the row of {file} does not hold a tvck summary"),
                    });
                };
                let list = if version == "1" {
                    tensors
                        .query_map([id], |t| {
                            let shape: String = t.get(2)?;
                            let hash: Vec<u8> = t.get(3)?;
                            Ok(TensorRow {
                                name: t.get(0)?,
                                dtype: t.get(1)?,
                                shape: serde_json::from_str(&shape).unwrap_or_default(),
                                hash: hash.try_into().unwrap_or([0; 32]),
                            })
                        })
                        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                        .map_err(db)?
                } else {
                    let blob: Vec<u8> = tensors.query_row([id], |t| t.get(0)).map_err(db)?;
                    decode_tensors_v2(&blob).ok_or_else(|| ManagerError::Foreign {
                        path: path.clone(),
                        what: format!("the row of {file} does not hold a tvck tensor list"),
                    })?
                };
                let rec = Record {
                    path: file,
                    stat: Stat::from_row(r, 2).map_err(db)?,
                    summary,
                    migration: r.get(6).map_err(db)?,
                    tensors: list,
                };
                writer
                    .insert(Some(id), rec, r.get(7).map_err(db)?)
                    .map_err(db)?;
            }
        }
        tx.execute_batch(drop).map_err(db)?;
        finish(tx)
    }

    /// The schema version the `meta` table names (an error for a database that is not a
    /// tvck index, or one newer than this tvck).
    fn check_meta(&self) -> Result<i64, ManagerError> {
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
        Ok(version)
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
        let first = self.begin_first_build()?;
        let report = self.update_rows(roots, on_start, on_file);
        if first {
            let ended = self.end_first_build();
            // The indexing's own error first.
            return report.and_then(|r| ended.map(|()| r));
        }
        report
    }

    /// The dirty pages a first indexing keeps in memory before it writes any into the
    /// file: 256 MiB (an index of about 85,000 checkpoints; 20,200 make 21 to 61 MB).
    const FIRST_BUILD_CACHE_KIB: i64 = 256 * 1024;

    /// Before a first indexing (an index with no file rows yet): its one transaction in
    /// SQLite's rollback-journal mode, whose commit writes each new page once, where the
    /// write-ahead log writes it twice (into the log, then into the file at the check-point
    /// on close) and syncs both. A fresh file's new pages need no journal (it holds what
    /// the pages were: nothing), and the commit syncs the journal and the file
    /// (`synchronous = FULL`: a power failure mid-commit leaves the empty index). The pages
    /// stay in memory until the commit (up to [`Index::FIRST_BUILD_CACHE_KIB`]), so that
    /// readers meanwhile read the empty index (and look at the files) rather than wait for
    /// the writer's exclusive lock. Whether it was done: another connection holding the
    /// index open in WAL mode keeps it there (the indexing then runs as any other).
    fn begin_first_build(&mut self) -> Result<bool, ManagerError> {
        let empty: bool = self
            .conn
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM files)", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if !empty {
            return Ok(false);
        }
        // Leaving WAL mode needs the file to itself: no waiting for readers here.
        self.conn
            .busy_timeout(Duration::ZERO)
            .map_err(|e| self.err(e))?;
        let mode = self
            .conn
            .query_row("PRAGMA journal_mode = DELETE", [], |r| {
                r.get::<_, String>(0)
            });
        self.conn
            .busy_timeout(self.busy_timeout)
            .map_err(|e| self.err(e))?;
        if !matches!(mode, Ok(m) if m.eq_ignore_ascii_case("delete")) {
            return Ok(false);
        }
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .and_then(|_| {
                self.conn
                    .pragma_update(None, "cache_size", -Self::FIRST_BUILD_CACHE_KIB)
            })
            .map_err(|e| self.err(e))?;
        Ok(true)
    }

    /// After a first indexing, committed or not: the write-ahead log again (readers and
    /// the writer do not block each other), and the settings of [`Index::prepare`].
    fn end_first_build(&mut self) -> Result<(), ManagerError> {
        self.conn
            .pragma_update(None, "cache_size", Self::CACHE_SIZE)
            .and_then(|_| self.conn.pragma_update(None, "synchronous", "NORMAL"))
            .map_err(|e| self.err(e))?;
        self.use_wal()
    }

    /// The write-ahead log's mode (kept in the file: set by a writer). Where another
    /// process holds the file (a first indexing running in the rollback journal's mode,
    /// which turns the log on itself when it ends; a reader past the busy timeout), the
    /// mode is left to the next writer: SQLite refuses at once where waiting could
    /// deadlock, and the rows are committed either way.
    fn use_wal(&self) -> Result<(), ManagerError> {
        match self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))
        {
            Ok(_) | Err(ManagerError::Locked { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// [`Index::update`]'s transaction.
    fn update_rows(
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
        // What is there now (walked on other threads) and, meanwhile, what the index holds
        // under the roots (from the `files_walk` index alone, in path order).
        let (walked, known) = std::thread::scope(|s| {
            let walk = s.spawn(|| roots.iter().map(|r| stats_now(r)).collect::<Vec<_>>());
            let known = (|| -> Result<Vec<(String, Known)>, ManagerError> {
                let mut known = Vec::new();
                let mut st = tx
                    .prepare(
                        "SELECT id, path, size, mtime_ns, inode, f_unreadable, f_unsafe FROM files
                         WHERE path = ?1
                         UNION ALL
                         SELECT id, path, size, mtime_ns, inode, f_unreadable, f_unsafe FROM files
                         WHERE path >= ?2 AND path < ?3",
                    )
                    .map_err(db)?;
                for root in &roots {
                    let (exact, lo, hi) = root_range(root);
                    let mut rows = st.query(params![exact, lo, hi]).map_err(db)?;
                    while let Some(r) = rows.next().map_err(db)? {
                        let k = Known {
                            id: r.get(0).map_err(db)?,
                            stat: Stat::from_row(r, 2).map_err(db)?,
                            unreadable: r.get(5).map_err(db)?,
                            unsafe_globals: r.get(6).map_err(db)?,
                            present: false,
                        };
                        known.push((r.get::<_, String>(1).map_err(db)?, k));
                    }
                }
                if roots.len() > 1 {
                    // Several roots interleave, and may overlap.
                    known.sort_by(|a, b| a.0.cmp(&b.0));
                    known.dedup_by(|a, b| a.0 == b.0);
                }
                Ok(known)
            })();
            (walk.join().expect("the walk does not panic"), known)
        });
        let mut known = known?;
        let mut present: Vec<(PathBuf, String, Stat)> = Vec::new();
        for (found, skipped) in walked {
            report.skipped.extend(skipped);
            if present.is_empty() {
                present = found;
            } else {
                present.extend(found);
            }
        }
        // The files now and the rows, both in path order, side by side; several roots may
        // overlap.
        {
            use rayon::slice::ParallelSliceMut;
            present.par_sort_unstable_by(|a, b| a.1.cmp(&b.1));
        }
        present.dedup_by(|a, b| a.1 == b.1);
        report.files = present.len();
        let mut to_read: Vec<(PathBuf, String, Stat)> = Vec::new();
        let mut replaced: Vec<i64> = Vec::new();
        let mut rows = known.iter_mut().peekable();
        for (p, text, stat) in present {
            while rows.next_if(|(path, _)| *path < text).is_some() {}
            match rows.next_if(|(path, _)| *path == text) {
                Some((_, k)) => {
                    k.present = true;
                    if k.stat == stat {
                        report.unchanged += 1;
                        report.unreadable += usize::from(k.unreadable);
                        report.unsafe_files += usize::from(k.unsafe_globals);
                    } else {
                        replaced.push(k.id);
                        report.changed += 1;
                        to_read.push((p, text, stat));
                    }
                }
                None => to_read.push((p, text, stat)),
            }
        }
        // Rows whose file is gone; a new path with one's exact stat is that file, renamed.
        let mut vanished: HashMap<Stat, Vec<(&String, &Known)>> = HashMap::new();
        for (p, k) in &known {
            if !k.present {
                vanished.entry(k.stat).or_default().push((p, k));
            }
        }
        let mut renames: Vec<(i64, &String, String)> = Vec::new();
        if !vanished.is_empty() {
            to_read.retain(|(_, text, stat)| {
                // A changed file (its path has a row) is no rename.
                if known.binary_search_by(|(p, _)| p.cmp(text)).is_ok() {
                    return true;
                }
                match vanished.get_mut(stat).and_then(Vec::pop) {
                    Some((old, k)) => {
                        report.unreadable += usize::from(k.unreadable);
                        report.unsafe_files += usize::from(k.unsafe_globals);
                        renames.push((k.id, old, text.clone()));
                        false
                    }
                    None => true,
                }
            });
        }
        // Read (and given ids) in path order: `present`'s.
        report.renamed = renames.len();
        report.added = to_read.len() - report.changed;
        let removed: Vec<i64> = vanished
            .into_values()
            .flatten()
            .map(|(_, k)| k.id)
            .collect();
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
            for (id, old, path) in &renames {
                mv.execute(params![id, path]).map_err(db)?;
                follow.execute(params![old, path]).map_err(db)?;
            }
        }
        on_start(to_read.len());
        let paths: Vec<PathBuf> = to_read.iter().map(|(p, _, _)| p.clone()).collect();
        // Read (in parallel) and write (here) at the same time.
        let sizes: Vec<u64> = to_read.iter().map(|(_, _, s)| s.size).collect();
        let (send, recv) = std::sync::mpsc::sync_channel::<Record>(4096);
        let unreadable = &mut report.unreadable;
        let unsafe_files = &mut report.unsafe_files;
        let written: Result<(), ManagerError> = std::thread::scope(|s| {
            let to_read = &to_read;
            let on_file = &on_file;
            let sizes = &sizes;
            s.spawn(move || {
                scan::hash_files(&paths, Some(sizes), |i, r| {
                    let (_, text, stat) = &to_read[i];
                    let record = record(text, *stat, r);
                    on_file(&record.summary);
                    // The receiver only stops early on a database error.
                    let _ = send.send(record);
                });
            });
            let mut writer = Writer::new(&tx).map_err(db)?;
            let now = now_s();
            // The writer takes what has arrived, then sleeps a little instead of waiting
            // on the channel: woken for every file, it cost a context switch per file
            // (6% of a first indexing's CPU); the channel holds thousands of records.
            loop {
                loop {
                    match recv.try_recv() {
                        Ok(rec) => {
                            *unreadable += usize::from(rec.summary.error.is_some());
                            *unsafe_files += usize::from(!rec.summary.unsafe_globals.is_empty());
                            writer.insert(None, rec, now).map_err(db)?;
                        }
                        Err(std::sync::mpsc::TryRecvError::Empty) => break,
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => return Ok(()),
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        written?;
        if !removed.is_empty() || !replaced.is_empty() {
            // Layouts no file has any more (a handful of rows: a run's epochs share one).
            tx.execute(
                "DELETE FROM layouts WHERE id NOT IN
                 (SELECT layout_id FROM files WHERE layout_id IS NOT NULL)",
                [],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(report)
    }

    /// Every indexed file under `roots` (all of them when `roots` is empty), by path.
    pub fn entries(&self, roots: &[PathBuf]) -> Result<Vec<Entry>, ManagerError> {
        self.entries_filtered(roots, "1")
    }

    /// The aliases of every aliased path.
    pub(crate) fn aliases_by_path(&self) -> Result<HashMap<String, Vec<String>>, ManagerError> {
        let mut by_path: HashMap<String, Vec<String>> = HashMap::new();
        for a in self.aliases()? {
            by_path.entry(a.path).or_default().push(a.name);
        }
        Ok(by_path)
    }

    /// The columns [`Index::decode`] reads, `files` joined with its `details`.
    const ENTRY_COLUMNS: &'static str =
        "SELECT files.id, path, size, mtime_ns, inode, details.summary, details.migration
         FROM files JOIN details ON details.file_id = files.id";

    /// The entry of a row of [`Index::ENTRY_COLUMNS`].
    fn decode(
        &self,
        r: &rusqlite::Row<'_>,
        aliases: &HashMap<String, Vec<String>>,
    ) -> Result<Entry, ManagerError> {
        let get = |e| self.err(e);
        let path: String = r.get(1).map_err(get)?;
        let stat = Stat::from_row(r, 2).map_err(get)?;
        self.entry(r.get(0).map_err(get)?, path, stat, r, 5, aliases)
    }

    /// The entry of the file `id` at `path` whose summary and migration record are columns
    /// `at` and `at + 1` of `r` (read in place, not copied).
    fn entry(
        &self,
        id: i64,
        path: String,
        stat: Stat,
        r: &rusqlite::Row<'_>,
        at: usize,
        aliases: &HashMap<String, Vec<String>>,
    ) -> Result<Entry, ManagerError> {
        let get = |e| self.err(e);
        let text = |i: usize| text_at(r, i).map_err(get);
        let Some(summary) = text(at)?.and_then(|t| serde_json::from_str::<FileSummary>(t).ok())
        else {
            return Err(ManagerError::Foreign {
                path: self.path.clone(),
                what: format!("the row of {path} does not hold a tvck summary"),
            });
        };
        let names = aliases.get(&path).cloned().unwrap_or_default();
        Ok(Entry::new(id, path, stat, summary, text(at + 1)?, names))
    }

    /// The rows under `roots` matching the SQL condition `cond` (a constant of this
    /// module, never text from outside), by path, as [`Index::decode`] reads them.
    fn entries_filtered(&self, roots: &[PathBuf], cond: &str) -> Result<Vec<Entry>, ManagerError> {
        let aliases = self.aliases_by_path()?;
        let mut out = Vec::new();
        self.rows_under_roots(roots, Self::ENTRY_COLUMNS, cond, |r| {
            out.push(self.decode(r, &aliases)?);
            Ok(())
        })?;
        if roots.len() > 1 {
            // Several roots interleave.
            out.sort_by(|a, b| a.path.cmp(&b.path));
        }
        Ok(out)
    }

    /// Call `each` on every row of `select` (a `SELECT` of this module whose second column
    /// is `path`) under `roots` (all rows when `roots` is empty) matching `cond` (a
    /// constant of this module), in path order per root, a path met under two roots once.
    /// A root selects its own path and the range of paths below it (`root/` ≤ path <
    /// `root0`, `0` following `/`), so SQLite walks only that part of the path index.
    fn rows_under_roots(
        &self,
        roots: &[PathBuf],
        select: &str,
        cond: &str,
        mut each: impl FnMut(&rusqlite::Row<'_>) -> Result<(), ManagerError>,
    ) -> Result<(), ManagerError> {
        let ranges: Vec<(String, String, String)> =
            roots.iter().map(|r| root_range(&canonical(r))).collect();
        let mut seen: HashSet<String> = HashSet::new();
        let several = ranges.len() > 1;
        let mut read = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<(), ManagerError> {
            let mut st = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
            let mut rows = st.query(args).map_err(|e| self.err(e))?;
            while let Some(r) = rows.next().map_err(|e| self.err(e))? {
                if several {
                    let path: String = r.get(1).map_err(|e| self.err(e))?;
                    if !seen.insert(path) {
                        continue;
                    }
                }
                each(r)?;
            }
            Ok(())
        };
        if ranges.is_empty() {
            return read(&format!("{select} WHERE {cond} ORDER BY path"), &[]);
        }
        // Two queries, not one with OR: each walks the path index in order (an OR makes
        // SQLite scan the table and sort the rows).
        let exact_sql = format!("{select} WHERE path = ?1 AND ({cond})");
        let range_sql =
            format!("{select} WHERE path >= ?1 AND path < ?2 AND ({cond}) ORDER BY path");
        for (exact, lo, hi) in &ranges {
            read(&exact_sql, &[exact])?;
            read(&range_sql, &[lo, hi])?;
        }
        Ok(())
    }

    /// What a selection ranks of every candidate under `roots`: the files whose row says
    /// they have a TernaryVAE version, were read without error and hold no unsafe global,
    /// by path, read from the rows' columns and their layouts alone (no summary decoded;
    /// each layout's shapes decoded once and shared).
    pub fn candidates(&self, roots: &[PathBuf]) -> Result<Vec<Source>, ManagerError> {
        self.candidates_and_stats(roots, None)
    }

    /// [`Index::candidates`] under `roots` when every file under them is indexed and
    /// unchanged ([`Index::is_fresh_tree`]), `None` when one is not. Under one root, one
    /// pass over its rows gives both the candidates and the stats the walk is compared
    /// with, while the walk runs on other threads.
    pub fn fresh_candidates(&self, roots: &[PathBuf]) -> Result<Option<Vec<Source>>, ManagerError> {
        let [root] = roots else {
            for r in roots {
                if !self.is_fresh_tree(r)? {
                    return Ok(None);
                }
            }
            let canon: Vec<PathBuf> = roots.iter().map(|r| canonical(r)).collect();
            return self.candidates(&canon).map(Some);
        };
        let Ok(canon) = root.canonicalize() else {
            return Ok(None);
        };
        let (read, now) = self.while_walking(&canon, |index| {
            let mut stats = Vec::new();
            index
                .candidates_and_stats(std::slice::from_ref(&canon), Some(&mut stats))
                .map(|c| (c, stats))
        });
        let (candidates, stats) = read?;
        Ok(same_files(&stats, now).then_some(candidates))
    }

    /// [`Index::candidates`]; with `stats`, every row under the roots (candidate or not)
    /// also has its (path, stat) pushed there, in path order.
    fn candidates_and_stats(
        &self,
        roots: &[PathBuf],
        mut stats: Option<&mut Vec<(String, Stat)>>,
    ) -> Result<Vec<Source>, ManagerError> {
        let mut reader = SourceReader::new(self)?;
        let mut select = reader.select.clone();
        // With stats: every row, its stat and whether it is a candidate after the source's
        // columns.
        let stat_at = reader.columns;
        if stats.is_some() {
            select.push_str(&format!(", size, mtime_ns, inode, ({CANDIDATE})"));
        }
        select.push_str(" FROM files");
        let cond = if stats.is_some() { "1" } else { CANDIDATE };
        // Sized once: growing a vector of 20,000 sources by doubling touched twice the
        // memory (fresh pages are faulted in and zeroed by the kernel).
        let rows = self.count_under_roots(roots)?;
        let mut out = Vec::with_capacity(rows);
        if let Some(stats) = stats.as_deref_mut() {
            stats.reserve(rows);
        }
        let get = |e| self.err(e);
        self.rows_under_roots(roots, &select, cond, |r| {
            let path: String = r.get(1).map_err(get)?;
            if let Some(stats) = stats.as_deref_mut() {
                let stat = Stat::from_row(r, stat_at).map_err(get)?;
                let candidate: bool = r.get(stat_at + 3).map_err(get)?;
                if !candidate {
                    stats.push((path, stat));
                    return Ok(());
                }
                stats.push((path.clone(), stat));
            }
            out.extend(reader.source(r, path)?);
            Ok(())
        })?;
        if roots.len() > 1 {
            out.sort_by(|a, b| a.path.cmp(&b.path));
        }
        Ok(out)
    }

    /// Every candidate row under the canonical `root` that `filter` matches, handed to
    /// `each` with the stored metrics `metrics` read (the rest left out), in path order,
    /// while the files under `root` are walked on other threads; then the path text of
    /// every row under `root` in path order (a [`CandidateRow::row`] is a place in it), or
    /// `None` when the index does not hold every file under `root` unchanged. One pass
    /// over the rows, a few columns each: what ranking thousands of candidates reads.
    pub(crate) fn fresh_candidate_rows(
        &self,
        root: &Path,
        filter: Option<&super::Query>,
        metrics: &[&str],
        mut each: impl FnMut(CandidateRow<'_>),
    ) -> Result<Option<Vec<String>>, ManagerError> {
        let mut columns = String::new();
        for m in metrics {
            columns.push_str(", ");
            columns.push_str(&query::column(m).expect("a stored metric"));
        }
        let (read, now) = self.while_walking(root, |index| {
            let _read = index.reading()?;
            let layouts = index.state_layouts()?;
            let none: Arc<[KeyShape]> = Arc::from(Vec::new());
            let mut stats: Vec<(String, Stat)> =
                Vec::with_capacity(index.count_under_roots(&[root.to_path_buf()])?);
            for (under, cond, args) in root_parts(root, filter) {
                let sql = format!(
                    "SELECT id, path, size, mtime_ns, inode, ({CANDIDATE} AND {cond}),
                            f_version, {STATE_LAYOUT}, f_provenance, f_layout{columns}
                     FROM files WHERE {under} ORDER BY path"
                );
                let mut st = index.conn.prepare(&sql).map_err(|e| index.err(e))?;
                let mut rows = st
                    .query(rusqlite::params_from_iter(args))
                    .map_err(|e| index.err(e))?;
                let get = |e| index.err(e);
                while let Some(r) = rows.next().map_err(get)? {
                    let stat = Stat::from_row(r, 2).map_err(get)?;
                    stats.push((r.get(1).map_err(get)?, stat));
                    if !r.get::<_, bool>(5).map_err(get)? {
                        continue;
                    }
                    let text = |i: usize| text_at(r, i).map_err(get);
                    let shapes = state_shapes_of(&layouts, &none, r.get(7).map_err(get)?)
                        .ok_or_else(|| index.missing_layout(&stats[stats.len() - 1].0))?;
                    let mut m = StoredMetrics {
                        provenance: text(8)?.and_then(Provenance::parse),
                        ..StoredMetrics::default()
                    };
                    for (i, name) in metrics.iter().enumerate() {
                        *m.by_name_mut(name).expect("a metric") = r.get(10 + i).map_err(get)?;
                    }
                    each(CandidateRow {
                        row: stats.len() - 1,
                        version: text(6)?.unwrap_or_default(),
                        layout: text(9)?.unwrap_or_default(),
                        shapes: &shapes,
                        metrics: m,
                        modified: u64::try_from(stat.mtime_ns / 1_000_000_000).unwrap_or(0),
                    });
                }
            }
            Ok::<_, ManagerError>(stats)
        });
        let stats = read?;
        if !same_files(&stats, now) {
            return Ok(None);
        }
        Ok(Some(stats.into_iter().map(|(p, _)| p).collect()))
    }

    /// How many rows are under `roots` (every row when there are none; a file under two
    /// overlapping roots counts twice).
    fn count_under_roots(&self, roots: &[PathBuf]) -> Result<usize, ManagerError> {
        let count = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<usize, ManagerError> {
            let mut st = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
            let n: i64 = st.query_row(args, |r| r.get(0)).map_err(|e| self.err(e))?;
            Ok(usize::try_from(n).unwrap_or(0))
        };
        if roots.is_empty() {
            return count("SELECT count(*) FROM files", &[]);
        }
        let mut n = 0;
        for r in roots {
            let (exact, lo, hi) = root_range(&canonical(r));
            n += count("SELECT count(*) FROM files WHERE path = ?1", &[&exact])?;
            n += count(
                "SELECT count(*) FROM files WHERE path >= ?1 AND path < ?2",
                &[&lo, &hi],
            )?;
        }
        Ok(n)
    }

    /// One read transaction for the statements run while the guard lives: one snapshot,
    /// and SQLite's shared lock taken once (outside a transaction each statement takes and
    /// releases it: `fcntl` and `stat` calls per statement, which a command running a
    /// statement per row pays per row). Inside a transaction already, nothing more.
    pub fn reading(&self) -> Result<Reading<'_>, ManagerError> {
        if !self.conn.is_autocommit() {
            return Ok(Reading { _transaction: None });
        }
        self.conn
            .unchecked_transaction()
            .map(|t| Reading {
                _transaction: Some(t),
            })
            .map_err(|e| self.err(e))
    }

    /// The indexed files under `roots` (all of them when `roots` is empty) that `filter`
    /// matches, ordered by `sort` (ties by path) or by path, at most `limit`: what
    /// [`Index::entries`] filtered with [`Query::matches`](super::Query::matches), sorted
    /// with [`SortKey::compare`](super::SortKey::compare) and truncated gives, computed in
    /// SQL over the query columns; only the rows returned are decoded.
    pub fn query(
        &self,
        roots: &[PathBuf],
        filter: Option<&super::Query>,
        sort: Option<&super::SortKey>,
        limit: Option<usize>,
    ) -> Result<Vec<Entry>, ManagerError> {
        let _read = self.reading()?;
        let aliases = self.aliases_by_path()?;
        if let (None, [root]) = (sort, roots) {
            // In path order under one root, the rows and their details are read in one
            // statement per part of the root's range, each a run of the table in its order
            // (with a sort key, or an OR of ranges, SQLite would sort the joined rows).
            let mut out = Vec::new();
            let mut left = limit.unwrap_or(usize::MAX);
            for (under, cond, mut args) in root_parts(&canonical(root), filter) {
                args.push(rusqlite::types::Value::Integer(
                    i64::try_from(left).unwrap_or(i64::MAX),
                ));
                let sql = format!(
                    "{} WHERE {under} AND {cond} ORDER BY path LIMIT ?{}",
                    Self::ENTRY_COLUMNS,
                    args.len()
                );
                let mut st = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
                let mut rows = st
                    .query(rusqlite::params_from_iter(args))
                    .map_err(|e| self.err(e))?;
                while let Some(r) = rows.next().map_err(|e| self.err(e))? {
                    out.push(self.decode(r, &aliases)?);
                    left -= 1;
                }
            }
            return Ok(out);
        }
        let ids = self.matching(roots, filter, sort, limit)?;
        let mut st = self
            .conn
            .prepare_cached(&format!("{} WHERE files.id = ?1", Self::ENTRY_COLUMNS))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, _) in ids {
            let mut rows = st.query([id]).map_err(|e| self.err(e))?;
            if let Some(r) = rows.next().map_err(|e| self.err(e))? {
                out.push(self.decode(r, &aliases)?);
            }
        }
        Ok(out)
    }

    /// The paths of the files [`Index::query`] returns, by path, nothing decoded.
    pub fn query_paths(
        &self,
        roots: &[PathBuf],
        filter: Option<&super::Query>,
    ) -> Result<Vec<String>, ManagerError> {
        Ok(self
            .matching(roots, filter, None, None)?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    /// (id, path) of the rows [`Index::query`] returns, in its order.
    fn matching(
        &self,
        roots: &[PathBuf],
        filter: Option<&super::Query>,
        sort: Option<&super::SortKey>,
        limit: Option<usize>,
    ) -> Result<Vec<(i64, String)>, ManagerError> {
        let roots: Vec<PathBuf> = roots.iter().map(|r| canonical(r)).collect();
        let mut args = Vec::new();
        let under = roots_sql(&roots, &mut args);
        let cond = filter.map_or_else(|| "1".to_string(), |q| q.to_sql(&mut args));
        let order = sort.map_or_else(|| "path".to_string(), |k| k.to_sql());
        let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        args.push(rusqlite::types::Value::Integer(limit));
        let sql = format!(
            "SELECT id, path FROM files WHERE {under} AND {cond} ORDER BY {order} LIMIT ?{}",
            args.len()
        );
        let mut st = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Whether the index holds exactly the checkpoints `paths` (discovered under `root`),
    /// each unchanged: see [`Index::is_fresh_tree`], with this list of files.
    pub fn is_fresh(&self, root: &Path, paths: &[PathBuf]) -> Result<bool, ManagerError> {
        use rayon::prelude::*;
        let Ok(canon) = root.canonicalize() else {
            return Ok(false);
        };
        // discover() walks from `root` as given; the index holds its canonical form.
        let now: Option<Vec<(String, Stat)>> = paths
            .par_iter()
            .map(|p| {
                let rel = p.strip_prefix(root).unwrap_or(p);
                let abs = if rel.as_os_str().is_empty() {
                    canon.clone()
                } else {
                    canon.join(rel)
                };
                Some((path_text(&abs), Stat::of(p).ok()?))
            })
            .collect();
        match now {
            Some(now) => self.holds_exactly(&canon, now),
            None => Ok(false),
        }
    }

    /// Whether the index holds exactly the checkpoints under `root` now, each unchanged:
    /// the walk's files (what `discover` finds) are the index's rows under `root`, one
    /// for one, and each file's (size, mtime, inode) from a `stat` now is its row's. No
    /// file is opened; the folders are read and the files `stat`ed in parallel, and
    /// compared with the rows in path order reading only their stat columns. A file
    /// rewritten in place at the same size within the same mtime (nanoseconds) and inode
    /// is the one change this cannot see.
    pub fn is_fresh_tree(&self, root: &Path) -> Result<bool, ManagerError> {
        self.is_fresh_tree_while(root, |_| ()).1
    }

    /// `work(self)` done on this thread while [`Index::is_fresh_tree`]'s walk runs on
    /// others (e.g. the query whose rows are then said to be fresh or not), and the
    /// freshness.
    pub fn is_fresh_tree_while<T>(
        &self,
        root: &Path,
        work: impl FnOnce(&Index) -> T,
    ) -> (T, Result<bool, ManagerError>) {
        let Ok(canon) = root.canonicalize() else {
            return (work(self), Ok(false));
        };
        let ((done, rows), now) =
            self.while_walking(&canon, |index| (work(index), index.rows_under(&canon)));
        let fresh = rows.map(|rows| same_files(&rows, now));
        (done, fresh)
    }

    /// `work(self)` on this thread while the files under the canonical `root` are walked
    /// on others, and the walk's (path text, stat) list.
    fn while_walking<T>(
        &self,
        root: &Path,
        work: impl FnOnce(&Index) -> T,
    ) -> (T, Vec<(String, Stat)>) {
        std::thread::scope(|s| {
            let walk = s.spawn(|| texts_now(root));
            let done = work(self);
            (done, walk.join().expect("the walk does not panic"))
        })
    }

    /// Whether the rows under the canonical `root` are exactly `now` (path text, stat).
    fn holds_exactly(&self, root: &Path, now: Vec<(String, Stat)>) -> Result<bool, ManagerError> {
        Ok(same_files(&self.rows_under(root)?, now))
    }

    /// (path, stat) of the rows under the canonical `root`, in path order, from the
    /// `files_walk` index alone.
    fn rows_under(&self, root: &Path) -> Result<Vec<(String, Stat)>, ManagerError> {
        let (exact, lo, hi) = root_range(root);
        // `root` sorts before `root/…`: the two parts in a row are in path order.
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT path, size, mtime_ns, inode FROM files WHERE path = ?1
                 UNION ALL
                 SELECT * FROM (SELECT path, size, mtime_ns, inode FROM files
                                WHERE path >= ?2 AND path < ?3 ORDER BY path)",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = st.query(params![exact, lo, hi]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let path: String = r.get(0).map_err(|e| self.err(e))?;
            out.push((path, Stat::from_row(r, 1).map_err(|e| self.err(e))?));
        }
        Ok(out)
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
                "SELECT layouts.tensors, hashes.hashes FROM hashes
                 JOIN files ON files.id = hashes.file_id
                 LEFT JOIN layouts ON layouts.id = files.layout_id
                 WHERE hashes.file_id = ?1",
            )
            .map_err(|e| self.err(e))?;
        let row: Option<(Option<Vec<u8>>, Vec<u8>)> = st
            .query_row([file_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((layout, hashes)) = row else {
            return Ok(Vec::new());
        };
        let foreign = || ManagerError::Foreign {
            path: self.path.clone(),
            what: format!("file row {file_id} does not hold a tvck tensor list"),
        };
        let layout = match layout {
            Some(l) => decode_layout(&l).ok_or_else(foreign)?,
            None => Vec::new(),
        };
        join_layout(layout, &hashes).ok_or_else(foreign)
    }

    /// The (key, shape) list of every layout, by its id, each decoded once: what
    /// [`Index::state_shapes`] gives a file of that layout whose tensors are a model state.
    /// (Every layout, not only the model states': which ones are would take a pass over
    /// the files, and a tree has a few layouts.)
    pub fn state_layouts(&self) -> Result<HashMap<i64, Arc<[KeyShape]>>, ManagerError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, tensors FROM layouts")
            .map_err(|e| self.err(e))?;
        let mut rows = st.query([]).map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let id: i64 = r.get(0).map_err(|e| self.err(e))?;
            let blob: Vec<u8> = r.get(1).map_err(|e| self.err(e))?;
            let layout = decode_layout(&blob).ok_or_else(|| ManagerError::Foreign {
                path: self.path.clone(),
                what: format!("layout row {id} does not hold a tvck tensor list"),
            })?;
            out.insert(
                id,
                layout
                    .into_iter()
                    .map(|(name, _, shape)| (name, shape))
                    .collect(),
            );
        }
        Ok(out)
    }

    /// The entries of every checkpoint of `paths` (discovered under `root`), when the
    /// index holds every one of them unchanged; `None` when any file is missing from the
    /// index or changed since (the caller reads the files instead).
    pub fn fresh_entries(
        &self,
        root: &Path,
        paths: &[PathBuf],
    ) -> Result<Option<Vec<Entry>>, ManagerError> {
        if !self.is_fresh(root, paths)? {
            return Ok(None);
        }
        let canon = canonical(root);
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
                        TensorRow {
                            name: t.name.clone(),
                            dtype: info.dtype.torch_name().to_string(),
                            shape: info.shape.clone(),
                            hash: t.hash,
                        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::{Query, SortKey};

    /// A deterministic spread of summaries: every field present, absent, tied, extreme.
    fn summary(i: usize) -> FileSummary {
        let pick = |k: usize, n: usize| (i * 7919 + k * 104_729) % n;
        let num = |k: usize| -> serde_json::Value {
            match pick(k, 5) {
                0 => serde_json::Value::Null,
                1 => 0.99.into(),
                2 => (-0.25).into(),
                _ => ((pick(k + 1, 1000) as f64) / 997.0).into(),
            }
        };
        let version = match pick(1, 4) {
            0 => serde_json::Value::Null,
            1 => {
                serde_json::json!({"version": "v5_12_4", "display": "v5.12.4", "confidence": 1.0, "layout": "L16 H64 dual 2L"})
            }
            2 => {
                serde_json::json!({"version": "v5_11", "display": "v5.11", "confidence": 0.5, "layout": "l16 h64 single 1L"})
            }
            _ => {
                serde_json::json!({"version": "v5_5", "display": "v5.5", "confidence": 0.75, "layout": "L16 H32"})
            }
        };
        let format = ["torch_zip", "torch_legacy", "safetensors"][pick(2, 3)];
        let provenance = ["trained", "measured", "fitted", "not_measured"][pick(3, 4)];
        let mut metrics = serde_json::json!({
            "coverage": num(4), "hierarchy": num(5), "hierarchy_a": num(6), "Q": num(7),
            "richness": num(8), "dist_corr": num(9), "r_v0": num(10), "r_v9": num(11),
            "mean_radius": num(12), "std_radius": num(13),
        });
        if pick(14, 3) > 0 {
            metrics["provenance"] = provenance.into();
        }
        let mut s = serde_json::json!({
            "path": format!("/t/run_{}/e{}.pt", i % 7, i),
            "size": 1000 + pick(15, 50) as u64,
            "format": format,
            "version": version,
            "tensors": pick(16, 9),
            "parameters": pick(17, 4) * 1000,
            "epoch": if pick(18, 4) == 0 { serde_json::Value::Null } else { pick(19, 30).into() },
            "metrics": metrics,
            "unsafe_globals": if pick(20, 9) == 0 { serde_json::json!(["os.system"]) } else { serde_json::json!([]) },
            "fingerprint": if pick(21, 3) == 0 { serde_json::Value::Null } else { format!("{:064x}", pick(22, 5)).into() },
        });
        if pick(23, 11) == 0 {
            s["error"] = "truncated".into();
        }
        serde_json::from_value(s).unwrap()
    }

    /// An index of 120 synthetic rows, some aliased, some converted.
    fn synthetic() -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("i.sqlite"), &IndexOptions::default()).unwrap();
        let mut writer = Writer::new(&index.conn).unwrap();
        for i in 0..120 {
            let s = summary(i);
            let rec = Record {
                path: s.path.clone(),
                stat: Stat {
                    size: s.size,
                    mtime_ns: (i as i64 % 13) * 1_000_000_000 + 7,
                    inode: i as u64,
                },
                migration: (i % 5 == 0).then(|| r#"{"spec":"a"}"#.to_string()),
                tensors: vec![TensorRow {
                    name: format!("encoder_A.w{}", i % 3),
                    dtype: "float32".into(),
                    shape: vec![i as u64, 2],
                    hash: [i as u8; 32],
                }],
                summary: s,
            };
            writer.insert(None, rec, 0).unwrap();
        }
        drop(writer);
        for (name, file) in [("production", 3), ("Paper", 3), ("old", 40), ("prod-2", 77)] {
            index
                .conn
                .execute(
                    "INSERT INTO aliases(name, path, fingerprint, at) VALUES (?1, ?2, NULL, 0)",
                    params![name, summary(file).path],
                )
                .unwrap();
        }
        (dir, index)
    }

    fn paths(es: &[Entry]) -> Vec<&str> {
        es.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn sql_filters_and_sorts_as_the_query_language_does() {
        let (_d, index) = synthetic();
        let all = index.entries(&[]).unwrap();
        assert_eq!(all.len(), 120);
        let mut queries: Vec<String> = Vec::new();
        for (f, kind, _) in query::FIELDS {
            let values: &[&str] = match kind {
                query::Kind::Number => &["0.99", "-0.25", "0", "1000", "12", "none"],
                query::Kind::Text => &[
                    "v5_12_4",
                    "'v5.11'",
                    "pt-zip",
                    "PT-ZIP",
                    "'l16 h64 single 1L'",
                    "trained",
                    "production",
                    "PRODUCTION",
                    "prod",
                    "run_3",
                    "none",
                    "'/t/run_3/e3.pt'",
                ],
                query::Kind::Flag => &["true", "false"],
            };
            if *kind == query::Kind::Flag {
                queries.push(f.to_string());
                queries.push(format!("not {f}"));
            }
            for op in ["==", "!=", "<", "<=", ">", ">=", "~"] {
                for v in values {
                    queries.push(format!("{f} {op} {v}"));
                }
            }
        }
        queries.extend(
            [
                "version == v5_12_4 and coverage >= 0.99",
                "not (coverage >= 0.5) or unreadable",
                "not hierarchy_B < 0 and (epoch > 3 or Q == none)",
                "alias != production and not (alias == none)",
                "converted and measured or unsafe and epoch <= 10",
            ]
            .map(String::from),
        );
        let mut checked = 0;
        for q in &queries {
            let Ok(query) = Query::parse(q) else { continue };
            let want: Vec<&str> = all
                .iter()
                .filter(|e| query.matches(*e))
                .map(|e| e.path.as_str())
                .collect();
            let got = index.query(&[], Some(&query), None, None).unwrap();
            assert_eq!(paths(&got), want, "{q}");
            let only_paths = index.query_paths(&[], Some(&query)).unwrap();
            assert_eq!(only_paths, want, "{q}: paths only");
            checked += 1;
        }
        assert!(checked > 300, "{checked} queries");
        for (f, kind, _) in query::FIELDS {
            if *kind == query::Kind::Flag {
                continue;
            }
            for dir in ["asc", "desc"] {
                let key = SortKey::parse(&format!("{f}:{dir}")).unwrap();
                let mut want = all.clone();
                want.sort_by(|a, b| key.compare(a, b));
                let got = index.query(&[], None, Some(&key), None).unwrap();
                assert_eq!(paths(&got), paths(&want), "{f}:{dir}");
                let top = index.query(&[], None, Some(&key), Some(5)).unwrap();
                assert_eq!(paths(&top), paths(&want[..5]), "{f}:{dir} limit 5");
            }
        }
        // A root selects the rows below it.
        let under = index
            .query(&[PathBuf::from("/t/run_3")], None, None, None)
            .unwrap();
        assert!(!under.is_empty() && under.iter().all(|e| e.path.starts_with("/t/run_3/")));
        // Decoded rows are the entries themselves.
        let one = index.query(&[], None, None, Some(1)).unwrap();
        assert_eq!(
            serde_json::to_value(&one[0]).unwrap(),
            serde_json::to_value(&all[0]).unwrap()
        );
        assert_eq!(index.tensors(one[0].id).unwrap()[0].shape, vec![0, 2]);
    }

    #[test]
    fn the_walk_and_the_rows_are_compared_one_for_one_in_any_order() {
        let st = |size| Stat {
            size,
            mtime_ns: 7,
            inode: 9,
        };
        // The rows come in path order; the walk in any.
        let rows = vec![
            ("/t/a.pt".to_string(), st(1)),
            ("/t/b/c.pt".to_string(), st(2)),
        ];
        let now = |v: &[(&str, u64)]| {
            v.iter()
                .map(|(p, s)| (p.to_string(), st(*s)))
                .collect::<Vec<_>>()
        };
        assert!(same_files(&rows, now(&[("/t/b/c.pt", 2), ("/t/a.pt", 1)])));
        assert!(same_files(&rows, now(&[("/t/a.pt", 1), ("/t/b/c.pt", 2)])));
        // A changed size, a renamed file, one more or one fewer.
        assert!(!same_files(&rows, now(&[("/t/b/c.pt", 3), ("/t/a.pt", 1)])));
        assert!(!same_files(&rows, now(&[("/t/b/d.pt", 2), ("/t/a.pt", 1)])));
        assert!(!same_files(
            &rows,
            now(&[("/t/b/c.pt", 2), ("/t/a.pt", 1), ("/t/e.pt", 1)])
        ));
        assert!(!same_files(&rows, now(&[("/t/a.pt", 1)])));
    }

    #[test]
    fn tensor_lists_round_trip_and_junk_is_refused() {
        let mut t = vec![
            TensorRow {
                name: "b".into(),
                dtype: "float16".into(),
                shape: vec![],
                hash: [1; 32],
            },
            TensorRow {
                name: "a.é".into(),
                dtype: "float32".into(),
                shape: vec![3, u64::MAX],
                hash: [2; 32],
            },
        ];
        let (layout, hashes) = encode_layout(&mut t);
        let layout = layout.expect("a list");
        assert_eq!(t[0].name, "a.é", "in name order");
        let read = |l: &[u8], h: &[u8]| decode_layout(l).and_then(|l| join_layout(l, h));
        assert_eq!(read(&layout, &hashes).unwrap(), t);
        assert_eq!(hashes.len(), 64);
        assert_eq!(encode_layout(&mut []), (None, Vec::new()));
        assert_eq!(read(&[], &[]).unwrap(), Vec::new());
        // A hash too many or too few is not the file's list.
        assert!(read(&layout, &hashes[..32]).is_none());
        assert!(read(&layout, &[&hashes[..], &[0; 32]].concat()).is_none());
        // The first layout record is 4 + 4 + 4 + 7 + 4 + 16 bytes: cut there, the layout
        // is one tensor's; cut anywhere else, it is not a layout.
        for cut in 1..layout.len() {
            let got = decode_layout(&layout[..cut]);
            if cut == 39 {
                assert_eq!(got.unwrap().len(), 1);
            } else {
                assert!(got.is_none(), "cut at {cut}");
            }
        }
        assert!(decode_layout(&[0xff; 16]).is_none());
        // Version 2's list: each tensor's layout record, then its hash.
        let mut v2 = Vec::new();
        for x in &t {
            encode_meta(&mut v2, x);
            v2.extend_from_slice(&x.hash);
        }
        assert_eq!(decode_tensors_v2(&v2).unwrap(), t);
        assert!(decode_tensors_v2(&v2[..v2.len() - 1]).is_none());
    }
}
