//! `tvck prune DIR`: which files the keep-rules let go, as a plan (a dry run by default),
//! and its careful execution.
//!
//! Whatever the rules say, a file is never deleted when:
//! * a config under the folder names it as `frozen_checkpoint.path` (a relative path
//!   protects every file whose path ends with it: the trainer's working directory is not
//!   known here);
//! * it has an alias (`tvck tag`);
//! * it is the lineage origin of a kept file's model part (the oldest other file holding
//!   that part's bytes) and no kept file holds its weights fingerprint (it would be the
//!   last copy of where the part came from);
//! * it is unreadable or unsafe (not understood, so not managed);
//! * it changed since the plan, or was tagged since: both re-checked right before its
//!   deletion.
//!
//! Every deletion (and every file skipped at deletion time) is written to the index's
//! `prune_audit` table.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::index::{Entry, Index, Stat};
use super::keep::{Item, Rules};
use super::ManagerError;

/// What the plan does with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Keep,
    Delete,
}

/// One file of the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanRow {
    /// Relative to the pruned folder.
    pub file: String,
    #[serde(skip)]
    pub abs: PathBuf,
    pub action: Action,
    /// The rules that keep it, then the protections that keep it.
    pub reasons: Vec<String>,
    /// Whether a protection (not a rule) keeps it.
    pub protected: bool,
    pub bytes: u64,
    /// What the file was when planned (re-checked right before its deletion).
    pub stat: Stat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// The plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrunePlan {
    pub root: String,
    pub rules: Rules,
    pub rows: Vec<PlanRow>,
    pub keep: usize,
    pub delete: usize,
    /// Bytes the deletions reclaim.
    pub reclaimed: u64,
}

/// What happened to one planned deletion.
#[derive(Debug, Clone, Serialize)]
pub struct Deletion {
    pub file: String,
    pub bytes: u64,
    /// `deleted`, or why it was not.
    pub outcome: String,
}

/// The result of `--apply`.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub deletions: Vec<Deletion>,
    pub deleted: usize,
    pub skipped: usize,
    pub reclaimed: u64,
}

/// One audit row.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub at: i64,
    pub path: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Why the plan deleted it: `not kept by latest:2,best:Q:3`.
    pub rule: String,
    pub outcome: String,
}

/// Largest config file read for `frozen_checkpoint.path`.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// `frozen_checkpoint.path` of every YAML config under `root`: (config relative path, raw
/// path).
fn frozen_paths(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root)
        .follow_links(true)
        .max_depth(crate::format::limits::MAX_SCAN_DEPTH)
        .sort_by_file_name()
        .into_iter()
        .flatten()
    {
        let p = e.path();
        let yaml = p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| x.eq_ignore_ascii_case("yaml") || x.eq_ignore_ascii_case("yml"));
        if !yaml || !e.file_type().is_file() {
            continue;
        }
        if e.metadata().map_or(true, |m| m.len() > MAX_CONFIG_BYTES) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(p) else {
            continue;
        };
        let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
            continue;
        };
        if let Some(raw) = doc
            .get("frozen_checkpoint")
            .and_then(|f| f.get("path"))
            .and_then(|v| v.as_str())
        {
            let rel = crate::discover::relative(root, p);
            out.push((rel, raw.to_string()));
        }
    }
    out
}

/// Whether the config path `raw` (from the config at `config`) may name `file`.
fn names(raw: &str, config: &Path, file: &Path) -> bool {
    let want = Path::new(raw);
    if want.is_absolute() {
        return want.canonicalize().ok().as_deref() == Some(file) || want == file;
    }
    // Relative to the config's folder: exactly.
    if let Some(dir) = config.parent() {
        if dir.join(want).canonicalize().ok().as_deref() == Some(file) {
            return true;
        }
    }
    // Relative to a working directory we do not know: any file ending with it.
    let comps: Vec<_> = want
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    let have: Vec<_> = file.components().collect();
    !comps.is_empty() && comps.len() <= have.len() && have[have.len() - comps.len()..] == comps[..]
}

/// The protections of [`plan`] that need no index entry, for `files` under `root` (the
/// trainer's `--keep`, which manages its own run folder): a config under `root` naming
/// the file as `frozen_checkpoint.path`, an alias in the default index.
pub fn protections_outside_index(root: &Path, files: &[PathBuf]) -> Vec<Vec<String>> {
    let canon = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let frozen = frozen_paths(&canon);
    let aliases = super::default_index()
        .and_then(|i| i.aliases().ok())
        .unwrap_or_default();
    files
        .iter()
        .map(|f| {
            let file = f.canonicalize().unwrap_or_else(|_| f.clone());
            let mut p: Vec<String> = frozen
                .iter()
                .filter(|(cfg, raw)| names(raw, &canon.join(cfg), &file))
                .map(|(cfg, _)| format!("frozen_checkpoint of {cfg}"))
                .collect();
            p.extend(
                aliases
                    .iter()
                    .filter(|a| Path::new(&a.path) == file)
                    .map(|a| format!("alias {}", a.name)),
            );
            p
        })
        .collect()
}

/// The plan for `root` (indexed first: only changed files are read).
pub fn plan(index: &mut Index, root: &Path, rules: &Rules) -> Result<PrunePlan, ManagerError> {
    index.update(&[root.to_path_buf()], |_| {}, |_| {})?;
    let canon = root.canonicalize().map_err(|source| ManagerError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let entries = index.entries(std::slice::from_ref(&canon))?;
    let groups: Vec<String> = entries
        .iter()
        .map(|e| {
            Path::new(&e.path)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let items: Vec<Item<'_>> = entries
        .iter()
        .zip(&groups)
        .map(|(e, g)| Item {
            group: g,
            name: &e.path,
            epoch: e.summary.epoch,
            modified: e.modified,
            metrics: &e.summary.metrics,
        })
        .collect();
    let by_rule = rules.apply(&items);
    let rel = |e: &Entry| crate::discover::relative(&canon, Path::new(&e.path));
    let mut protections: Vec<Vec<String>> = vec![Vec::new(); entries.len()];
    // Configs naming a frozen checkpoint.
    let frozen = frozen_paths(&canon);
    for (i, e) in entries.iter().enumerate() {
        let file = Path::new(&e.path);
        for (cfg, raw) in &frozen {
            if names(raw, &canon.join(cfg), file) {
                protections[i].push(format!("frozen_checkpoint of {cfg}"));
            }
        }
        for a in &e.aliases {
            protections[i].push(format!("alias {a}"));
        }
        if e.summary.error.is_some() {
            protections[i].push("unreadable: not managed".into());
        } else if !e.summary.unsafe_globals.is_empty() {
            protections[i].push("unsafe: not managed".into());
        }
    }
    // Lineage: each kept file's parts point at their origin.
    let graph = super::lineage::Graph::build(index, &entries)?;
    let kept = |i: usize, prot: &[Vec<String>]| !by_rule[i].is_empty() || !prot[i].is_empty();
    let mut checked: HashSet<usize> = HashSet::new();
    loop {
        let mut added = false;
        for k in 0..entries.len() {
            if !kept(k, &protections) || !checked.insert(k) {
                continue;
            }
            // Decided on what was kept before this file's parts were looked at.
            let before = protections.clone();
            for (pi, (part, _)) in graph.parts[k].iter().enumerate() {
                let Some(origin) = graph.origin(&entries, k, pi) else {
                    continue;
                };
                if kept(origin, &before) {
                    continue;
                }
                let fp = &entries[origin].summary.fingerprint;
                let copy_kept = fp.is_some()
                    && (0..entries.len()).any(|j| {
                        j != origin && kept(j, &before) && entries[j].summary.fingerprint == *fp
                    });
                if !copy_kept {
                    protections[origin].push(format!(
                        "lineage: origin of {part} of kept {}",
                        rel(&entries[k])
                    ));
                    added = true;
                }
            }
        }
        if !added {
            break;
        }
    }
    let mut rows = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let protected = !protections[i].is_empty();
        let mut reasons = by_rule[i].clone();
        reasons.extend(protections[i].iter().cloned());
        rows.push(PlanRow {
            file: rel(e),
            abs: PathBuf::from(&e.path),
            action: if reasons.is_empty() {
                Action::Delete
            } else {
                Action::Keep
            },
            reasons,
            protected,
            bytes: e.summary.size,
            stat: e.stat,
            fingerprint: e.summary.fingerprint.clone(),
        });
    }
    let delete = rows.iter().filter(|r| r.action == Action::Delete).count();
    Ok(PrunePlan {
        root: canon.to_string_lossy().into_owned(),
        rules: rules.clone(),
        keep: rows.len() - delete,
        delete,
        reclaimed: rows
            .iter()
            .filter(|r| r.action == Action::Delete)
            .map(|r| r.bytes)
            .sum(),
        rows,
    })
}

/// A plan saved earlier (the JSON of a dry run), for `root`: the reviewed plan to carry
/// out. Its rows' absolute paths are rebuilt from its root.
pub fn load_plan(path: &Path, root: &Path) -> Result<PrunePlan, ManagerError> {
    let err = |message: String| ManagerError::PlanFile {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut plan: PrunePlan =
        serde_json::from_str(&text).map_err(|e| err(format!("not a prune plan: {e}")))?;
    let canon = root.canonicalize().map_err(|source| ManagerError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    if Path::new(&plan.root) != canon {
        return Err(err(format!(
            "the plan is for {}, not {}",
            plan.root,
            canon.display()
        )));
    }
    for row in &mut plan.rows {
        let rel = Path::new(&row.file);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(err(format!(
                "`{}` is not a path inside the plan's root",
                row.file
            )));
        }
        row.abs = canon.join(rel);
    }
    Ok(plan)
}

/// A saved plan checked against a fresh one (same root, same rules): a file the saved
/// plan deletes is deleted only when the fresh plan deletes it too; otherwise it is kept
/// with the fresh plan's reasons (a protection that arose since, a file gone). A file the
/// saved plan keeps stays kept. The saved rows' stats stay the ones re-checked before a
/// deletion, so a file changed since the saved plan is skipped then.
pub fn reconcile(saved: &PrunePlan, fresh: &PrunePlan) -> PrunePlan {
    let mut out = saved.clone();
    for row in &mut out.rows {
        if row.action != Action::Delete {
            continue;
        }
        match fresh.rows.iter().find(|f| f.file == row.file) {
            Some(f) if f.action == Action::Delete => {}
            Some(f) => {
                row.action = Action::Keep;
                row.protected = f.protected;
                row.reasons = f
                    .reasons
                    .iter()
                    .map(|r| format!("{r} (since the plan)"))
                    .collect();
            }
            None => {
                row.action = Action::Keep;
                row.reasons = vec!["gone since the plan".into()];
            }
        }
    }
    out.delete = out
        .rows
        .iter()
        .filter(|r| r.action == Action::Delete)
        .count();
    out.keep = out.rows.len() - out.delete;
    out.reclaimed = out
        .rows
        .iter()
        .filter(|r| r.action == Action::Delete)
        .map(|r| r.bytes)
        .sum();
    out
}

/// Delete what `plan` deletes, each file re-checked right before: still the file the plan
/// saw (size, mtime, inode) and still without an alias. `before_each` runs before each
/// check (progress; tests use it to change a file under the plan's feet).
pub fn apply(
    index: &mut Index,
    plan: &PrunePlan,
    mut before_each: impl FnMut(&PlanRow),
) -> Result<ApplyReport, ManagerError> {
    let mut deletions = Vec::new();
    let rule_text = format!(
        "not kept by {}",
        plan.rules
            .0
            .iter()
            .map(|r| r.label())
            .collect::<Vec<_>>()
            .join(",")
    );
    for row in plan.rows.iter().filter(|r| r.action == Action::Delete) {
        before_each(row);
        let path_text = row.abs.to_string_lossy().into_owned();
        let tagged = index
            .aliases()?
            .into_iter()
            .filter(|a| a.path == path_text)
            .map(|a| a.name)
            .collect::<Vec<_>>();
        let outcome = match Stat::of(&row.abs) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                "skipped: already gone".to_string()
            }
            Err(e) => format!("skipped: {e}"),
            Ok(s) if s != row.stat => "skipped: changed since the plan".to_string(),
            Ok(_) if !tagged.is_empty() => {
                format!("skipped: tagged {} since the plan", tagged.join(", "))
            }
            Ok(_) => {
                let id = index.audit(&path_text, row, &rule_text, "deleting")?;
                let outcome = match std::fs::remove_file(&row.abs) {
                    Ok(()) => "deleted".to_string(),
                    Err(e) => format!("failed: {e}"),
                };
                index.finish_audit(id, &outcome, &path_text)?;
                deletions.push(Deletion {
                    file: row.file.clone(),
                    bytes: row.bytes,
                    outcome,
                });
                continue;
            }
        };
        index.audit(&path_text, row, &rule_text, &outcome)?;
        deletions.push(Deletion {
            file: row.file.clone(),
            bytes: row.bytes,
            outcome,
        });
    }
    let deleted = deletions.iter().filter(|d| d.outcome == "deleted").count();
    Ok(ApplyReport {
        deleted,
        skipped: deletions.len() - deleted,
        reclaimed: deletions
            .iter()
            .filter(|d| d.outcome == "deleted")
            .map(|d| d.bytes)
            .sum(),
        deletions,
    })
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Index {
    fn audit(
        &self,
        path: &str,
        row: &PlanRow,
        rule: &str,
        outcome: &str,
    ) -> Result<i64, ManagerError> {
        self.conn
            .execute(
                "INSERT INTO prune_audit(at, path, size, fingerprint, rule, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![now_s(), path, row.bytes as i64, row.fingerprint, rule, outcome],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn finish_audit(&self, id: i64, outcome: &str, path: &str) -> Result<(), ManagerError> {
        self.conn
            .execute(
                "UPDATE prune_audit SET outcome = ?2 WHERE id = ?1",
                params![id, outcome],
            )
            .map_err(|e| self.err(e))?;
        if outcome == "deleted" {
            self.conn
                .execute("DELETE FROM files WHERE path = ?1", [path])
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// The audit table, oldest first.
    pub fn prune_audit(&self) -> Result<Vec<AuditRow>, ManagerError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT at, path, size, fingerprint, rule, outcome FROM prune_audit ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(AuditRow {
                    at: r.get(0)?,
                    path: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    fingerprint: r.get(3)?,
                    rule: r.get(4)?,
                    outcome: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}
