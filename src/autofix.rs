//! `tvck check --auto-fix [--write]`: find checkpoints that fit a config, rank them, and
//! propose (or apply) the config edit as a minimal text change.
//!
//! The candidates and their ranking are `tvck select`'s ([`crate::manager::select`]):
//! loads without error, then exact layout fit, then metrics measured on the candidate's
//! current weights (a converted file whose metrics were never measured comes after every
//! measured one, whatever the file claims), then coverage ≥ 0.995, then best (most
//! negative) hierarchy, then newest. With a [`Measure`] (the trainer's, `--measure`) every
//! candidate is evaluated first and ranked by what was measured.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::check::{self, CheckOptions, CheckReport};
use crate::config::{DecoderToLoad, EncoderToLoad, TrainingConfig};
use crate::manager::select;
use crate::yamledit;

pub use crate::manager::select::{
    config_path_text, Candidate, Measure, MeasureError, MEASURED_NOW,
};

/// The proposed fix.
#[derive(Debug, Clone, Serialize)]
pub struct AutoFix {
    /// Folders searched.
    pub roots: Vec<PathBuf>,
    /// Compatible candidates, best first.
    pub candidates: Vec<Candidate>,
    /// (dotted key, new value) edits of the config; empty when there is nothing to fix or
    /// no candidate fits.
    pub edits: Vec<(String, String)>,
    /// The edit as a unified diff.
    pub diff: String,
    #[serde(skip)]
    pub new_text: Option<String>,
    /// Why nothing is proposed, when so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Default search folders: ./checkpoints, ./sandbox-training/checkpoints, the config's
/// folder, then each extra root; only those that exist, without duplicates.
pub fn default_roots(config_path: &Path, cwd: &Path, extra: &[PathBuf]) -> Vec<PathBuf> {
    let config_dir = cwd.join(config_path.parent().unwrap_or(Path::new("")));
    let mut roots: Vec<PathBuf> = Vec::new();
    for r in [
        cwd.join("checkpoints"),
        cwd.join("sandbox-training/checkpoints"),
        config_dir,
    ]
    .into_iter()
    .chain(extra.iter().map(|e| cwd.join(e)))
    {
        let canon = r.canonicalize().unwrap_or(r);
        if canon.is_dir() && !roots.contains(&canon) {
            roots.push(canon);
        }
    }
    roots
}

/// Every checkpoint under `roots` that the config's model class accepts (or that a
/// migration would make acceptable), ranked by [`select::rank`] (the ranking `tvck select`
/// uses); read from the default index when it holds every file unchanged; with `measure`,
/// each one evaluated and ranked by its measured metrics.
pub fn find_candidates(
    cfg: &TrainingConfig,
    report: &CheckReport,
    roots: &[PathBuf],
    cwd: &Path,
    measure: Option<&dyn Measure>,
) -> Vec<Candidate> {
    let index = crate::manager::default_index();
    let (sources, _) = select::sources(index.as_ref(), roots);
    select::rank(
        cfg,
        report,
        &sources,
        cwd,
        measure,
        select::RankBy::default(),
    )
}

/// Whether the report has a problem a different frozen checkpoint would fix.
pub fn needs_fix(report: &CheckReport) -> bool {
    report
        .findings
        .iter()
        .any(|f| f.severity == check::Severity::Error && f.rule.fixed_by_another_checkpoint())
}

/// Propose the fix for a checked config; `measure` evaluates every candidate first.
pub fn propose(
    cfg: &TrainingConfig,
    report: &CheckReport,
    opts: &CheckOptions,
    measure: Option<&dyn Measure>,
) -> AutoFix {
    let roots = default_roots(&cfg.path, &opts.cwd, &opts.checkpoint_roots);
    let candidates = find_candidates(cfg, report, &roots, &opts.cwd, measure);
    let mut fix = AutoFix {
        roots,
        candidates,
        edits: Vec::new(),
        diff: String::new(),
        new_text: None,
        note: None,
    };
    if !needs_fix(report) {
        fix.note = Some("nothing to fix: the frozen checkpoint settings pass".into());
        return fix;
    }
    let Some(best) = fix.candidates.first().filter(|c| c.fits).cloned() else {
        fix.note = Some(
            "no checkpoint under the searched folders fits this config; pass --checkpoint-root DIR to search elsewhere"
                .into(),
        );
        return fix;
    };
    fix.edits
        .push(("frozen_checkpoint.path".into(), best.path.clone()));
    let fc = cfg.frozen_checkpoint.as_ref();
    if fc
        .and_then(|f| f.encoder_to_load)
        .is_none_or(|e| e == EncoderToLoad::Nothing)
    {
        fix.edits
            .push(("frozen_checkpoint.encoder_to_load".into(), "both".into()));
    }
    if fc
        .and_then(|f| f.decoder_to_load)
        .is_none_or(|d| d == DecoderToLoad::Nothing)
    {
        fix.edits.push((
            "frozen_checkpoint.decoder_to_load".into(),
            "decoder_A".into(),
        ));
    }
    match yamledit::apply(&cfg.text, &fix.edits) {
        Ok(new_text) => {
            let name = cfg.path.to_string_lossy();
            let name = name.trim_start_matches('/');
            fix.diff = yamledit::unified_diff(&cfg.text, &new_text, name, name);
            fix.new_text = Some(new_text);
        }
        Err(e) => {
            fix.note = Some(format!("cannot edit the config automatically: {e}"));
            fix.edits.clear();
        }
    }
    fix
}

/// Errors of `--write`. Whichever it is, the config is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write the backup {}: {source}; the config is left as it was", path.display())]
    Backup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}; it is left as it was", path.display())]
    Write {
        path: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    /// The config is a symbolic link: replacing it would turn the link into a file and
    /// leave the file it points to unchanged.
    #[error("{} is a symbolic link to {}: not replaced", path.display(), target.display())]
    Symlink { path: PathBuf, target: PathBuf },
    /// The config has other names (hard links): replacing it would leave them with the
    /// old text.
    #[error("{} has {links} names (hard links): not replaced", path.display())]
    HardLinks { path: PathBuf, links: u64 },
}

impl WriteError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            WriteError::Symlink { target, .. } => Some(format!(
                "fix the file the link points to instead: {}",
                target.display()
            )),
            WriteError::HardLinks { .. } => {
                Some("fix one name's copy by hand, or remove the other links first".into())
            }
            WriteError::Write { dir, source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Some(format!("make the folder {} writable", dir.display()))
            }
            WriteError::Backup { path, source }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
                Some(format!(
                    "make the folder {} writable",
                    dir.unwrap_or(Path::new(".")).display()
                ))
            }
            WriteError::Write { source, .. } | WriteError::Backup { source, .. }
                if source.kind() == std::io::ErrorKind::StorageFull
                    || source.raw_os_error() == Some(28) =>
            {
                Some("free some space on that file system, then run it again".into())
            }
            _ => None,
        }
    }
}

/// Apply a fix: copy the config to `CONFIG.bak`, then replace it atomically (a temporary
/// file in the same folder, fsync, rename). Returns the backup's path.
pub fn write_fix(config: &Path, new_text: &str) -> Result<PathBuf, WriteError> {
    let dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut bak = config.as_os_str().to_owned();
    bak.push(".bak");
    let bak = PathBuf::from(bak);
    let write_err = |source| WriteError::Write {
        path: config.to_path_buf(),
        dir: dir.clone(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(config) {
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(config).unwrap_or_default();
            return Err(WriteError::Symlink {
                path: config.to_path_buf(),
                target,
            });
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if meta.nlink() > 1 {
                return Err(WriteError::HardLinks {
                    path: config.to_path_buf(),
                    links: meta.nlink(),
                });
            }
        }
    }
    let original = std::fs::read(config).map_err(write_err)?;
    atomic_write(&bak, &original).map_err(|source| WriteError::Backup {
        path: bak.clone(),
        source,
    })?;
    atomic_write(config, new_text.as_bytes()).map_err(write_err)?;
    Ok(bak)
}

/// Write `bytes` to `path` atomically (temporary file in the same folder, fsync,
/// rename, fsync the folder), replacing an existing file. The temporary file is removed
/// on failure.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::format::write::write_atomic(path, true, |w| Ok(w.write_all(bytes)?))
        .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "a: 1\n").unwrap();
        atomic_write(&p, b"a: 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a: 2\n");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("tvck"))
            .collect();
        assert!(leftovers.is_empty());
        // A folder that does not exist fails cleanly.
        assert!(atomic_write(&dir.path().join("no/x"), b"").is_err());
    }

    #[test]
    fn write_fix_makes_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "# keep\na: 1\n").unwrap();
        let bak = write_fix(&p, "# keep\na: 2\n").unwrap();
        assert_eq!(bak, dir.path().join("c.yaml.bak"));
        assert_eq!(std::fs::read_to_string(&bak).unwrap(), "# keep\na: 1\n");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "# keep\na: 2\n");
    }
}
