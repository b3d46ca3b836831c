//! Aliases (`tvck tag FILE NAME`, `tvck untag NAME`): one file per name, every change kept
//! in `alias_history`. An alias follows its file when a re-index sees it renamed.

use std::path::Path;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::index::Index;
use super::ManagerError;

/// An alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alias {
    pub name: String,
    pub path: String,
    /// The weights fingerprint when it was tagged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Seconds since the Unix epoch.
    pub at: i64,
}

/// One change of an alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AliasChange {
    pub at: i64,
    /// `tag`, `move` (the name was on another file) or `untag`.
    pub action: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The file the name was on before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Index {
    /// Every alias, by name.
    pub fn aliases(&self) -> Result<Vec<Alias>, ManagerError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT name, path, fingerprint, at FROM aliases ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(Alias {
                    name: r.get(0)?,
                    path: r.get(1)?,
                    fingerprint: r.get(2)?,
                    at: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Every alias change, oldest first.
    pub fn alias_history(&self) -> Result<Vec<AliasChange>, ManagerError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT at, action, name, path, fingerprint, previous FROM alias_history ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(AliasChange {
                    at: r.get(0)?,
                    action: r.get(1)?,
                    name: r.get(2)?,
                    path: r.get(3)?,
                    fingerprint: r.get(4)?,
                    previous: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Give `file` (an indexed file) the alias `name`, taking it from any other file.
    pub fn tag(&mut self, file: &Path, name: &str) -> Result<AliasChange, ManagerError> {
        if !valid(name) {
            return Err(ManagerError::BadAliasName {
                name: name.to_string(),
            });
        }
        let path = file
            .canonicalize()
            .unwrap_or_else(|_| file.to_path_buf())
            .to_string_lossy()
            .into_owned();
        let ipath = self.path().to_path_buf();
        let db = |e| ManagerError::db(&ipath, e);
        let tx = self.conn.transaction().map_err(db)?;
        let fingerprint: Option<Option<String>> = tx
            .query_row(
                "SELECT fingerprint FROM files WHERE path = ?1",
                [&path],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        let Some(fingerprint) = fingerprint else {
            return Err(ManagerError::NotIndexed { path });
        };
        let previous: Option<String> = tx
            .query_row("SELECT path FROM aliases WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db)?;
        let at = now_s();
        let action = match &previous {
            Some(p) if *p == path => "tag",
            Some(_) => "move",
            None => "tag",
        };
        tx.execute(
            "INSERT INTO aliases(name, path, fingerprint, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET path = excluded.path, fingerprint = excluded.fingerprint, at = excluded.at",
            params![name, path, fingerprint, at],
        )
        .map_err(db)?;
        let previous = previous.filter(|p| *p != path);
        tx.execute(
            "INSERT INTO alias_history(at, action, name, path, fingerprint, previous) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![at, action, name, path, fingerprint, previous],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(AliasChange {
            at,
            action: action.into(),
            name: name.into(),
            path: Some(path),
            fingerprint,
            previous,
        })
    }

    /// Remove the alias `name`.
    pub fn untag(&mut self, name: &str) -> Result<AliasChange, ManagerError> {
        let known: Vec<String> = self.aliases()?.into_iter().map(|a| a.name).collect();
        let ipath = self.path().to_path_buf();
        let db = |e| ManagerError::db(&ipath, e);
        let tx = self.conn.transaction().map_err(db)?;
        let old: Option<(String, Option<String>)> = tx
            .query_row(
                "SELECT path, fingerprint FROM aliases WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db)?;
        let Some((path, fingerprint)) = old else {
            return Err(ManagerError::UnknownAlias {
                name: name.into(),
                known,
            });
        };
        let at = now_s();
        tx.execute("DELETE FROM aliases WHERE name = ?1", [name])
            .map_err(db)?;
        tx.execute(
            "INSERT INTO alias_history(at, action, name, path, fingerprint, previous) VALUES (?1, 'untag', ?2, NULL, NULL, ?3)",
            params![at, name, path],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(AliasChange {
            at,
            action: "untag".into(),
            name: name.into(),
            path: None,
            fingerprint,
            previous: Some(path),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn alias_names() {
        for ok in ["production", "v5.12.4-best", "a_b"] {
            assert!(super::valid(ok), "{ok}");
        }
        for no in ["", "a b", "x/y", "prod\u{1b}[31m"] {
            assert!(!super::valid(no), "{no}");
        }
    }
}
