//! The checkpoint manager: an incremental index of every checkpoint under some folders
//! (SQLite), a small query language over it, and the selection of the best checkpoint a
//! training config can load.
//!
//! * [`index`]: the database (schema with a version table; a foreign or corrupt file is an
//!   error, never overwritten), incremental re-indexing by (size, mtime, inode), vanished
//!   files dropped, one transaction per run, a second indexer waits for the first.
//! * [`query`]: `version == v5_12_4 and coverage >= 0.99 and epoch > 20`, typed, errors
//!   pointing at the column of the bad token; evaluated on records ([`Query::matches`])
//!   and, over the index, translated to SQL on its query columns (tests pin the two to
//!   the same answers).
//! * [`select`]: the ranking `tvck select` and `tvck check --auto-fix` share (one
//!   definition): what the config's class accepts and the trainer can load, then metrics
//!   measured on the candidate's current weights only.

pub mod index;
pub mod keep;
pub mod lineage;
pub mod prune;
pub mod query;
pub mod select;
pub mod source;
pub mod tag;

use std::path::{Path, PathBuf};

pub use index::{Entry, Index, IndexOptions, IndexReport};
pub use query::{Query, QueryError, SortKey};

/// The environment variable naming the index file.
pub const INDEX_ENV: &str = "TVCK_INDEX";
/// The environment variable setting how long (milliseconds) a writer of the index waits
/// for another one before it fails with [`ManagerError::Locked`] (default 60,000).
pub const BUSY_TIMEOUT_ENV: &str = "TVCK_INDEX_BUSY_TIMEOUT_MS";

/// Errors of the manager.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The file exists and is not an SQLite database (or is damaged).
    #[error("{}: not a tvck index (not a readable SQLite database: {source})", path.display())]
    Corrupt {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// An SQLite database that some other program wrote.
    #[error("{}: an SQLite database that is not a tvck index ({what})", path.display())]
    Foreign { path: PathBuf, what: String },
    /// An index written by a newer tvck.
    #[error("{}: index schema version {found}, this tvck reads version {supported}", path.display())]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// An index of an older schema, opened read-only (a writer upgrades it).
    #[error("{}: index schema version {found}, this tvck reads version {supported}", path.display())]
    OlderSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// A commit that was cut off (its process killed while writing the file) and that a
    /// read-only opener cannot roll back: the next writer does.
    #[error("{}: an indexing was stopped while it wrote the index, and reading cannot undo that", path.display())]
    Interrupted { path: PathBuf },
    /// Another process holds the index's write lock for longer than the busy timeout.
    #[error("{}: another process is writing the index (still locked after {})", path.display(), seconds(*waited_ms))]
    Locked { path: PathBuf, waited_ms: u64 },
    /// A setting (environment variable) with a value that does not parse.
    #[error("{name}={value}: not {expected}")]
    BadSetting {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    /// Any other database failure.
    #[error("{}: index database error: {source}", path.display())]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The index's folder cannot be created.
    #[error("cannot create the index folder {}: {source}", path.display())]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A folder to index does not exist or cannot be read.
    #[error("{}: {source}", path.display())]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file the index does not hold.
    #[error("{path}: not in the index")]
    NotIndexed { path: String },
    /// `untag` of an alias nobody gave.
    #[error("no alias `{name}`")]
    UnknownAlias { name: String, known: Vec<String> },
    /// An alias that is empty or has characters other than letters, digits, `_`, `-`, `.`.
    #[error("`{name}` is not an alias name (letters, digits, `_`, `-` and `.` only)")]
    BadAliasName { name: String },
    /// A keep-rule that does not parse.
    #[error("keep-rule `{rule}`: {message}")]
    BadRule { rule: String, message: String },
    /// A keep-rules file that cannot be read or parsed.
    #[error("{}: {message}", path.display())]
    RulesFile { path: PathBuf, message: String },
    /// A saved prune plan that cannot be read or does not fit.
    #[error("{}: {message}", path.display())]
    PlanFile { path: PathBuf, message: String },
    /// No index location: neither the variable, XDG_CACHE_HOME nor HOME is set.
    #[error("no index location: TVCK_INDEX, XDG_CACHE_HOME and HOME are all unset")]
    NoLocation,
}

impl ManagerError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            ManagerError::Corrupt { path, .. } | ManagerError::Foreign { path, .. } => Some(format!(
                "tvck never overwrites it: choose another index file, or move {} away and index again",
                path.display()
            )),
            ManagerError::NewerSchema { .. } => {
                Some("use the tvck that wrote it, or a new index file".into())
            }
            ManagerError::OlderSchema { .. } => Some(
                "index once with this tvck (`tvck index DIR`): it upgrades the index in place"
                    .into(),
            ),
            ManagerError::Interrupted { .. } => Some(
                "index once (`tvck index DIR`): it rolls the stopped write back, leaving the index as it was before"
                    .into(),
            ),
            ManagerError::Locked { .. } => Some(format!(
                "wait for the other `tvck index` to finish, then run again (or wait longer: {BUSY_TIMEOUT_ENV}=MILLISECONDS)"
            )),
            ManagerError::BadSetting { name, .. } => Some(format!("unset {name}, or set it to e.g. 60000")),
            ManagerError::NoLocation => {
                Some("set TVCK_INDEX to the index file's path".into())
            }
            ManagerError::Folder { .. } => Some("choose an index path in a writable folder".into()),
            ManagerError::NotIndexed { .. } => Some("index its folder first (`tvck index DIR`)".into()),
            ManagerError::UnknownAlias { known, .. } if known.is_empty() => {
                Some("no alias is set".into())
            }
            ManagerError::UnknownAlias { known, .. } => {
                Some(format!("aliases: {}", known.join(", ")))
            }
            ManagerError::BadAliasName { .. } => Some("e.g. `production`".into()),
            ManagerError::PlanFile { .. } => {
                Some("make the plan again (a dry run's JSON) for the same folder".into())
            }
            ManagerError::BadRule { .. } | ManagerError::RulesFile { .. } => Some(
                "rules: latest:N, best:METRIC:N (Q, coverage, hierarchy_B, …), every:K, comma-separated, or a YAML list of them under `keep:`"
                    .into(),
            ),
            _ => None,
        }
    }

    pub(crate) fn db(path: &Path, source: rusqlite::Error) -> ManagerError {
        use rusqlite::ffi::ErrorCode;
        if let rusqlite::Error::SqliteFailure(e, _) = &source {
            if e.extended_code == rusqlite::ffi::SQLITE_READONLY_ROLLBACK {
                return ManagerError::Interrupted {
                    path: path.to_path_buf(),
                };
            }
        }
        match source.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
                ManagerError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                }
            }
            _ => ManagerError::Db {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

/// `60 s`, `0.2 s`: a wait as the messages say it.
fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{} s", ms as f64 / 1000.0)
    }
}

/// The index at the default location ([`index_path`] without an explicit path), when
/// there is one that opens: commands that can also read the files use it as a cache and
/// fall back to the files otherwise.
pub fn default_index() -> Option<Index> {
    let path = index_path(None).ok()?;
    Index::open_existing(&path).ok().flatten()
}

/// The index file: `explicit` if given, else `$TVCK_INDEX`, else
/// `$XDG_CACHE_HOME/tvck/index.sqlite`, else `~/.cache/tvck/index.sqlite`.
pub fn index_path(explicit: Option<&Path>) -> Result<PathBuf, ManagerError> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = var(INDEX_ENV) {
        return Ok(p);
    }
    let cache = var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .ok_or(ManagerError::NoLocation)?;
    Ok(cache.join("tvck").join("index.sqlite"))
}
