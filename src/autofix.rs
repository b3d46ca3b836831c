//! `tvck check --auto-fix [--write]`: find checkpoints that fit a config, rank them, and
//! propose (or apply) the config edit as a minimal text change.
//!
//! Ranking: loads without error, then exact layout fit, then metrics measured on the
//! candidate's current weights (a converted file whose metrics were never measured comes
//! after every measured one, whatever the file claims), then coverage ≥ 0.995, then best
//! (most negative) hierarchy, then newest. With a [`Measure`] (the trainer's, `--measure`)
//! every candidate is evaluated first and ranked by what was measured.

use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::arch::{self, VersionId};
use crate::check::{self, CheckOptions, CheckReport};
use crate::config::{DecoderToLoad, EncoderToLoad, TrainingConfig};
use crate::format::Checkpoint;
use crate::metrics::{Provenance, StoredMetrics};
use crate::yamledit;

/// Evaluates a checkpoint file on all 19,683 operations (the trainer's `tvck eval`).
pub trait Measure: Sync {
    fn measure(&self, path: &Path) -> Result<StoredMetrics, MeasureError>;
}

/// A candidate that could not be evaluated.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct MeasureError(pub String);

/// A checkpoint considered for `frozen_checkpoint.path`.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// The path as it would be written in the config.
    pub path: String,
    pub version: VersionId,
    pub layout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hierarchy: Option<f64>,
    /// Where `coverage` and `hierarchy` come from: stored by training, measured after
    /// conversion, `measured_now` (evaluated by this run), or `not_measured` (a converted
    /// file never evaluated: no values are used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<&'static str>,
    /// Seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified: Option<u64>,
    /// Loads without a size mismatch, frozen parts complete.
    pub fits: bool,
    /// Every key provided and used.
    pub exact: bool,
    /// Why it ranks where it does.
    pub why: String,
}

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

/// The path to write in the config: relative to the working directory when inside it
/// (the trainer resolves relative to its working directory first), else absolute.
fn config_path_text(path: &Path, cwd: &Path) -> String {
    let cwd = cwd.canonicalize().unwrap_or_else(|_| cwd.to_path_buf());
    let p = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    p.strip_prefix(&cwd)
        .map(Path::to_path_buf)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// [`Candidate::metrics`] of a candidate evaluated by this run.
pub const MEASURED_NOW: &str = "measured_now";

/// The `why` text: the fit, then what the metrics say and where they come from.
fn explain(fit: &[String], c: &Candidate) -> String {
    let mut why = fit.to_vec();
    let origin = match c.metrics {
        Some(MEASURED_NOW) => " (measured now)",
        Some("measured") | Some("fitted") => " (measured after conversion)",
        _ => "",
    };
    if c.metrics == Some(Provenance::NotMeasured.as_str()) {
        why.push("not measured since conversion".into());
    } else {
        match c.coverage {
            Some(v) if v >= crate::metrics::coverage::FULL_FROM => {
                why.push(format!("coverage {:.2}%{origin}", v * 100.0))
            }
            Some(v) => why.push(format!("low coverage {:.2}%{origin}", v * 100.0)),
            None => why.push("no stored coverage".into()),
        }
    }
    if let Some(h) = c.hierarchy {
        why.push(format!("hierarchy {h:.3}"));
    }
    why.join(", ")
}

/// Every checkpoint under `roots` that the config's model class accepts, ranked; with
/// `measure`, each one evaluated and ranked by its measured metrics.
pub fn find_candidates(
    cfg: &TrainingConfig,
    report: &CheckReport,
    roots: &[PathBuf],
    cwd: &Path,
    measure: Option<&dyn Measure>,
) -> Vec<Candidate> {
    let (Some(class), Some(target_version), Some(target_params)) = (
        report.model.class.as_deref(),
        report.model.version,
        report.model.params.as_ref(),
    ) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = roots
        .iter()
        .flat_map(|r| crate::discover::discover(r, crate::discover::Walk::everything()).files)
        .collect();
    paths.sort();
    paths.dedup();
    let mut out: Vec<Candidate> = paths
        .par_iter()
        .filter_map(|p| {
            let ckpt = Checkpoint::open(p).ok()?;
            if ckpt.has_unsafe_globals() {
                return None;
            }
            let best = arch::infer_checkpoint(&ckpt).best?;
            if !arch::accepts_source(class, best.version) {
                return None;
            }
            let plan = check::load_plan(
                cfg,
                &arch::state_shapes(&ckpt),
                best.version,
                target_version,
                target_params,
            );
            let m = StoredMetrics::from_root(&ckpt.root);
            let provenance = m.provenance;
            let modified = std::fs::metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            let mut why = Vec::new();
            why.push(if plan.exact() {
                "exact layout fit".to_string()
            } else if plan.fits() {
                format!(
                    "loads ({} mapped, {} initialised, {} ignored)",
                    plan.mapped.len(),
                    plan.missing.len(),
                    plan.unexpected.len()
                )
            } else {
                format!("does not fit: {} size mismatches", plan.size_mismatch.len())
            });
            let mut c = Candidate {
                path: config_path_text(p, cwd),
                version: best.version,
                layout: best.params.summary(),
                coverage: m.coverage,
                hierarchy: m.hierarchy,
                metrics: provenance.map(Provenance::as_str),
                modified,
                fits: plan.fits(),
                exact: plan.exact(),
                why: String::new(),
            };
            c.why = explain(&why, &c);
            Some((c, p.clone(), why))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|(mut c, p, fit)| {
            if let Some(m) = measure {
                match m.measure(&p) {
                    Ok(measured) => {
                        c.coverage = measured.coverage;
                        c.hierarchy = measured.hierarchy;
                        c.metrics = Some(MEASURED_NOW);
                    }
                    Err(e) => {
                        c.coverage = None;
                        c.hierarchy = None;
                        c.metrics = Some(Provenance::NotMeasured.as_str());
                        c.why = format!("{}, could not be measured: {e}", fit.join(", "));
                        return c;
                    }
                }
                c.why = explain(&fit, &c);
            }
            c
        })
        .collect();
    out.sort_by(|a, b| {
        let healthy = |c: &Candidate| {
            c.coverage
                .is_some_and(|v| v >= crate::metrics::coverage::FULL_FROM)
        };
        let measured = |c: &Candidate| c.metrics != Some(Provenance::NotMeasured.as_str());
        b.fits
            .cmp(&a.fits)
            .then(b.exact.cmp(&a.exact))
            .then(measured(b).cmp(&measured(a)))
            .then(healthy(b).cmp(&healthy(a)))
            .then(
                a.hierarchy
                    .unwrap_or(f64::INFINITY)
                    .total_cmp(&b.hierarchy.unwrap_or(f64::INFINITY)),
            )
            .then(b.modified.cmp(&a.modified))
            .then(a.path.cmp(&b.path))
    });
    out
}

/// Whether the report has a problem a different frozen checkpoint would fix.
pub fn needs_fix(report: &CheckReport) -> bool {
    report.findings.iter().any(|f| {
        f.severity == check::Severity::Error
            && (f.rule.starts_with("frozen-") || f.rule == "size-mismatch")
    })
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

/// Errors of `--write`.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write the backup {}: {source}", path.display())]
    Backup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {} (folder {} not writable?): {source}", path.display(), dir.display())]
    Write {
        path: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
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
    crate::format::write::write_atomic(path, true, |w| Ok(w.write_all(bytes)?)).map_err(|e| match e
    {
        crate::format::write::WriteError::Io(io) => io,
        other => std::io::Error::other(other.to_string()),
    })
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
