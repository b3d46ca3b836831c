//! A run folder's config files and checkpoints, as the dashboard and the report show them:
//! each checkpoint with `tvck inspect`'s data (format, version, epoch, parameters, stored
//! metrics, findings), read without hashing.
//!
//! Only regular files directly in the run folder are read (no links are followed, no
//! sub-folders walked), and a file is looked up by a name from that listing, never by
//! joining a requested name to the folder.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::Serialize;

use crate::discover::is_checkpoint_path;
use crate::format::{Checkpoint, Format};
use crate::inspect::{self, FindingRow, InspectReport};
use crate::metrics::StoredMetrics;
use crate::monitor::run::{RunInfo, RUN_FILE};

/// A config shown whole up to this many bytes.
pub const MAX_CONFIG: u64 = 256 * 1024;
/// Files of a run folder listed at most (a folder of thousands is cut).
pub const MAX_FILES: usize = 1000;

/// A config file of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigFile {
    /// Its name in the run folder, or the path run.json gives.
    pub name: String,
    /// The text (lossy UTF-8), up to [`MAX_CONFIG`] bytes.
    pub text: String,
    pub truncated: bool,
}

/// One checkpoint of the run folder.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointRow {
    pub file: String,
    pub size: u64,
    /// Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// The version guessed from the keys and shapes (`v5.11`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    pub parameters: u64,
    pub tensors: usize,
    pub metrics: StoredMetrics,
    pub findings: Vec<FindingRow>,
    /// Why the file could not be read (then the fields above are empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the dashboard's run page and the report show besides the curves.
#[derive(Debug, Clone, Serialize)]
pub struct RunDetail {
    /// run.json, when the run has one.
    pub info: Option<RunInfo>,
    pub configs: Vec<ConfigFile>,
    pub checkpoints: Vec<CheckpointRow>,
}

/// The regular files directly in `dir`, sorted by name (no links, at most [`MAX_FILES`]).
fn files(dir: &Path) -> Vec<(String, PathBuf, std::fs::Metadata)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.path().symlink_metadata().ok()?;
            meta.is_file()
                .then(|| (e.file_name().to_string_lossy().into_owned(), e.path(), meta))
        })
        .take(MAX_FILES)
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn is_config(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with(".yaml") || n.ends_with(".yml")
}

fn read_config(name: String, path: &Path) -> Option<ConfigFile> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut buf = Vec::new();
    f.take(MAX_CONFIG).read_to_end(&mut buf).ok()?;
    Some(ConfigFile {
        name,
        text: String::from_utf8_lossy(&buf).into_owned(),
        truncated: len > MAX_CONFIG,
    })
}

/// The config run.json names, when it lies under `root` (a dashboard shows nothing
/// outside the folder it serves).
fn named_config(dir: &Path, root: &Path, info: &RunInfo) -> Option<ConfigFile> {
    let given = Path::new(info.config.as_deref()?);
    let root = root.canonicalize().ok()?;
    let candidates = if given.is_absolute() {
        vec![given.to_path_buf()]
    } else {
        vec![dir.join(given), root.join(given)]
    };
    let path = candidates
        .into_iter()
        .filter_map(|p| p.canonicalize().ok())
        .find(|p| p.starts_with(&root) && p.is_file())?;
    read_config(given.display().to_string(), &path)
}

fn unix(meta: &std::fs::Metadata) -> Option<u64> {
    meta.modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// One checkpoint's row (`tvck inspect` without hashes).
pub fn checkpoint_row(file: &str, path: &Path, meta: &std::fs::Metadata) -> CheckpointRow {
    let mut row = CheckpointRow {
        file: file.to_string(),
        size: meta.len(),
        modified: unix(meta),
        format: None,
        version: None,
        confidence: None,
        epoch: None,
        parameters: 0,
        tensors: 0,
        metrics: StoredMetrics::default(),
        findings: Vec::new(),
        error: None,
    };
    match Checkpoint::open(path) {
        Ok(c) => {
            let r = inspect::build(&c, file, false);
            row.format = Some(r.format);
            row.version = r.version.as_ref().map(|v| v.display.clone());
            row.confidence = r.version.as_ref().map(|v| v.confidence);
            row.epoch = r.epoch;
            row.parameters = r.parameters;
            row.tensors = r.tensors.len();
            row.metrics = r.metrics;
            row.findings = r.findings;
        }
        Err(e) => row.error = Some(e.to_string()),
    }
    row
}

/// Read a run folder's configs and checkpoints. `root` is the folder the dashboard serves
/// (run.json's config is shown only when it lies under it).
pub fn read_detail(dir: &Path, root: &Path) -> RunDetail {
    let info = RunInfo::read(dir);
    let listing = files(dir);
    let mut configs: Vec<ConfigFile> = listing
        .iter()
        .filter(|(n, _, _)| is_config(n))
        .filter_map(|(n, p, _)| read_config(n.clone(), p))
        .collect();
    if let Some(c) = info.as_ref().and_then(|i| named_config(dir, root, i)) {
        let same = configs.iter().any(|k| k.text == c.text);
        if !same {
            configs.push(c);
        }
    }
    let checkpoints = listing
        .iter()
        .filter(|(n, p, _)| n != RUN_FILE && is_checkpoint_path(p))
        .map(|(n, p, m)| checkpoint_row(n, p, m))
        .collect();
    RunDetail {
        info,
        configs,
        checkpoints,
    }
}

/// The whole `tvck inspect` report (no hashes) of the checkpoint named `file` in the run
/// folder: `None` when no regular checkpoint file of that name is listed there.
pub fn inspect_file(dir: &Path, file: &str) -> Option<Result<InspectReport, String>> {
    let (name, path, _) = files(dir)
        .into_iter()
        .find(|(n, p, _)| n == file && is_checkpoint_path(p))?;
    Some(
        Checkpoint::open(&path)
            .map(|c| inspect::build(&c, &name, false))
            .map_err(|e| e.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_configs_and_checkpoints_but_no_links_or_other_names() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("r");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(run.join("c.yaml"), "model: {}\n").unwrap();
        std::fs::write(run.join("bad.pt"), b"not a checkpoint").unwrap();
        std::fs::write(d.path().join("outside.yaml"), "secret: 1\n").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(d.path().join("outside.yaml"), run.join("link.yaml")).unwrap();
        let r = read_detail(&run, &run);
        assert_eq!(
            r.configs
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["c.yaml"]
        );
        assert_eq!(r.checkpoints.len(), 1);
        assert!(r.checkpoints[0].error.is_some());
        assert!(inspect_file(&run, "bad.pt").unwrap().is_err());
        assert!(inspect_file(&run, "../outside.yaml").is_none());
        assert!(inspect_file(&run, "c.yaml").is_none());
    }
}
