//! `tvck train --keep RULES`: the run's epoch checkpoints and the keep-rules applied to
//! them as they are written.
//!
//! With keep-rules the trainer also writes `epoch_N.pt` (N = the 0-based `epoch` it
//! stores, upstream's numbering) every `save_every` epochs and at the last one; after
//! each such write the rules ([`crate::manager::keep`], the engine `tvck prune` uses)
//! decide which `epoch_N.pt` of the run folder stay. Only `epoch_N.pt` files are ever
//! deleted (never best.pt, best_Q.pt, latest.pt or anything else), and never one that is
//! protected as `tvck prune` protects it: named as `frozen_checkpoint.path` by a config
//! under the run folder, or carrying an alias in the default index. An unreadable epoch
//! file is not understood, so not deleted either.
//!
//! The rules are stored in latest.pt's `resume.keep`, so `tvck train --resume` goes on
//! applying them (or the ones given again).

use std::path::{Path, PathBuf};

use crate::format::Checkpoint;
use crate::manager::keep::{Item, Rules};
use crate::metrics::StoredMetrics;

/// The name of the epoch checkpoint of 0-based epoch `e0`.
pub fn epoch_file(e0: u64) -> String {
    format!("epoch_{e0}.pt")
}

/// The epoch of an `epoch_N.pt` name.
pub fn epoch_of(name: &str) -> Option<u64> {
    let n = name.strip_prefix("epoch_")?.strip_suffix(".pt")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0'))
    {
        return None;
    }
    n.parse().ok()
}

/// What the rules did with one epoch file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub file: String,
    /// The rules and protections that keep it; empty: deleted.
    pub kept_by: Vec<String>,
    /// Deletion failed (the file stays): why.
    pub error: Option<String>,
}

/// One epoch file as the rules see it.
struct EpochFile {
    name: String,
    path: PathBuf,
    epoch: Option<i64>,
    modified: u64,
    metrics: StoredMetrics,
    /// Could not be read: not managed.
    unreadable: bool,
}

fn epoch_files(dir: &Path) -> Vec<EpochFile> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = epoch_of(&name) else { continue };
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = e.path();
        let modified = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let (epoch, metrics, unreadable) = match Checkpoint::open(&path) {
            Ok(c) if !c.has_unsafe_globals() => (
                crate::metrics::epoch(&c.root).or(i64::try_from(n).ok()),
                StoredMetrics::from_root(&c.root),
                false,
            ),
            _ => (None, StoredMetrics::default(), true),
        };
        out.push(EpochFile {
            name,
            path,
            epoch,
            modified,
            metrics,
            unreadable,
        });
    }
    out.sort_by_key(|f| (epoch_of(&f.name), f.name.clone()));
    out
}

/// Apply `rules` to the `epoch_N.pt` files of `dir`: delete what no rule keeps and no
/// protection holds. Returns a decision per file, in epoch order.
pub fn apply(dir: &Path, rules: &Rules) -> Vec<Decision> {
    let files = epoch_files(dir);
    let items: Vec<Item<'_>> = files
        .iter()
        .map(|f| Item {
            group: "run",
            name: &f.name,
            epoch: f.epoch,
            modified: f.modified,
            metrics: &f.metrics,
        })
        .collect();
    let by_rule = rules.apply(&items);
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let protections = crate::manager::prune::protections_outside_index(dir, &paths);
    files
        .iter()
        .zip(by_rule)
        .zip(protections)
        .map(|((f, mut kept_by), prot)| {
            kept_by.extend(prot);
            if f.unreadable {
                kept_by.push("unreadable: not managed".into());
            }
            let error = if kept_by.is_empty() {
                std::fs::remove_file(&f.path).err().map(|e| e.to_string())
            } else {
                None
            };
            Decision {
                file: f.name.clone(),
                kept_by,
                error,
            }
        })
        .collect()
}

/// [`apply`], each deletion (or failed deletion) said in a line.
pub fn apply_and_report(dir: &Path, rules: &Rules, on_line: &mut dyn FnMut(&str)) {
    for d in apply(dir, rules) {
        match (&d.error, d.kept_by.is_empty()) {
            (Some(e), _) => on_line(&format!("keep: cannot delete {}: {e}", d.file)),
            (None, true) => on_line(&format!(
                "keep: deleted {} (kept by none of {})",
                d.file,
                rules.label()
            )),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_names() {
        assert_eq!(epoch_file(12), "epoch_12.pt");
        assert_eq!(epoch_of("epoch_12.pt"), Some(12));
        assert_eq!(epoch_of("epoch_0.pt"), Some(0));
        for bad in [
            "epoch_.pt",
            "epoch_01.pt",
            "epoch_1.pth",
            "best.pt",
            "epoch_-1.pt",
            "xepoch_1.pt",
        ] {
            assert_eq!(epoch_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_epoch_files_are_deleted_and_unreadable_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let sample =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/v5_11/best.pt");
        for n in 0..5 {
            std::fs::copy(&sample, dir.path().join(epoch_file(n))).unwrap();
        }
        for other in ["best.pt", "latest.pt", "best_Q.pt", "epoch_7.pth"] {
            std::fs::copy(&sample, dir.path().join(other)).unwrap();
        }
        std::fs::write(dir.path().join("epoch_9.pt"), b"not a checkpoint").unwrap();
        // The copies all store the sample's epoch: ranked by the name's order then.
        let d = apply(dir.path(), &Rules::parse("latest:1").unwrap());
        let deleted: Vec<&str> = d
            .iter()
            .filter(|x| x.kept_by.is_empty())
            .map(|x| x.file.as_str())
            .collect();
        assert_eq!(deleted.len(), 4, "{d:?}");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert!(left.contains(&"epoch_9.pt".to_string()));
        for other in ["best.pt", "latest.pt", "best_Q.pt", "epoch_7.pth"] {
            assert!(left.contains(&other.to_string()), "{other}: {left:?}");
        }
        assert_eq!(left.iter().filter(|n| epoch_of(n).is_some()).count(), 2);
    }
}
