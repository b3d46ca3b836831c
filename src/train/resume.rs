//! `tvck train --resume RUN_DIR`: what latest.pt stores so that a run continues exactly
//! where it stopped, and the pieces of the run folder a continued run reads back.
//!
//! latest.pt carries, besides upstream's keys (training.md §6), a `resume` dict
//! (docs/training-differences.md, "Resume"): the epoch count of the run, whether it
//! finished, where its config is, the schedule's origin, the initial and last metrics,
//! the richness baseline (`orig_radii`) and the gradients PyTorch's clip would still see
//! (`passive_grads`). The model comes from `model_state_dict`, the optimizer's moments and
//! step counts from `optimizer_state`, the homeostasis from `homeostasis`, the bests and
//! the patience counter from `best_Q`, `best_hierarchy` and `epochs_without_improvement`.
//!
//! Randomness needs no saved generator state: every epoch draws from a generator seeded
//! with [`epoch_seed`]`(seed, epoch)`, so epoch k + 1 does not depend on how the process
//! got to it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::format::value::value_json as to_json;
use crate::format::write::{write_atomic, WriteError};
use crate::format::{Checkpoint, Value};

use super::metrics::EvalMetrics;
use super::plot;

/// The version of the `resume` dict this tvck writes and reads.
pub const FORMAT: i64 = 1;
/// How the random choices of an epoch are seeded (the `resume.rng` value): a tvck that
/// seeds differently refuses the file instead of continuing on another stream.
pub const RNG_SCHEME: &str = "splitmix64(seed, epoch) per epoch";
/// The config keys a continued run may change: the epoch count (extends or ends the run).
pub const MAY_CHANGE: &[&str] = &["training.epochs"];

/// The generator seed of 0-based epoch `epoch0` of a run with `seed` (SplitMix64 of the
/// seed, then of the sum with the epoch; non-negative, as libtorch's seed is an i64 here).
pub fn epoch_seed(seed: u64, epoch0: u64) -> i64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    (mix(mix(seed).wrapping_add(epoch0)) >> 1) as i64
}

/// Why a run cannot be continued.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("{dir}: no latest.pt to continue from")]
    NoLatest { dir: PathBuf },
    #[error("{path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("{path} holds no tvck resume state (key `{key}` missing or malformed)")]
    NoState { path: PathBuf, key: String },
    #[error("{path}: resume state format {found}, this tvck reads format {FORMAT}")]
    Format { path: PathBuf, found: i64 },
    #[error("{path} was trained with another random scheme (`{found}`)")]
    Rng { path: PathBuf, found: String },
    #[error(
        "{config} differs from the config the run in {dir} was trained with, at {}",
        keys.join(", ")
    )]
    ConfigChanged {
        config: PathBuf,
        dir: PathBuf,
        keys: Vec<String>,
    },
    #[error("the run in {dir} was trained with seed {run}, not {asked}")]
    SeedChanged { dir: PathBuf, run: u64, asked: u64 },
    #[error("{path}: {message}")]
    Metrics { path: PathBuf, message: String },
    #[error("the optimizer state in {path} does not fit the run: {message}")]
    Optimizer { path: PathBuf, message: String },
    #[error("{path} holds NaN or infinite weights: {}", tensors.join("; "))]
    NonFinite { path: PathBuf, tensors: Vec<String> },
}

impl ResumeError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ResumeError::NoLatest { .. } => {
                "name the folder a run writes its outputs to (it holds latest.pt and metrics.jsonl), or start a new run"
            }
            ResumeError::Unreadable { .. } | ResumeError::Metrics { .. } => {
                "the run folder is damaged: start the run again"
            }
            ResumeError::NoState { .. } | ResumeError::Format { .. } | ResumeError::Rng { .. } => {
                "this latest.pt was not written by this tvck's trainer: start a new run (upstream's resume can still load it)"
            }
            ResumeError::ConfigChanged { .. } => {
                "continue with the run's own config (only training.epochs may change, which extends the run), or start a new run"
            }
            ResumeError::SeedChanged { .. } => "leave the seed out: a continued run keeps its own",
            ResumeError::Optimizer { .. } => "start the run again",
            ResumeError::NonFinite { .. } => {
                "the run diverged before this latest.pt was written: continuing would train NaN; start it again with a lower training.lr or training.max_grad_norm"
            }
        }
    }
}

/// Why a run ended (`resume.finished`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finished {
    /// Every epoch of the run was trained.
    Completed,
    /// The patience ran out (training.md §5).
    EarlyStop,
}

impl Finished {
    pub fn as_str(self) -> &'static str {
        match self {
            Finished::Completed => "completed",
            Finished::EarlyStop => "early_stop",
        }
    }

    fn parse(s: &str) -> Option<Finished> {
        match s {
            "completed" => Some(Finished::Completed),
            "early_stop" => Some(Finished::EarlyStop),
            _ => None,
        }
    }
}

/// A run folder's latest.pt, read for a continuation.
pub struct Resume {
    pub dir: PathBuf,
    pub path: PathBuf,
    pub ckpt: Checkpoint,
    /// Upstream's 0-based epoch of latest.pt: metrics.jsonl lines 0..=epoch0 + 1 are done.
    pub epoch0: u64,
    pub seed: u64,
    /// The run's epoch count.
    pub epochs: u64,
    pub finished: Option<Finished>,
    pub config_path: PathBuf,
    pub cwd: PathBuf,
    /// The config the run was trained with (as every checkpoint stores it).
    pub config: Value,
    pub schedule_origin: u64,
    pub initial: EvalMetrics,
    pub last: EvalMetrics,
    pub best_q: f64,
    pub best_hierarchy: f64,
    pub epochs_without_improvement: u64,
    /// The keep-rules of the run's epoch files (`resume.keep`), when it has some.
    pub keep: Option<crate::manager::keep::Rules>,
}

impl Resume {
    /// Read `dir`/latest.pt and its resume state.
    pub fn open(dir: &Path) -> Result<Resume, ResumeError> {
        let path = dir.join("latest.pt");
        if !path.is_file() {
            return Err(ResumeError::NoLatest {
                dir: dir.to_path_buf(),
            });
        }
        let ckpt = Checkpoint::open(&path).map_err(|e| ResumeError::Unreadable {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // A model that computes NaN would continue as a silent NaN run.
        let non_finite = crate::format::finite::non_finite(&ckpt);
        if !non_finite.is_empty() {
            return Err(ResumeError::NonFinite {
                path,
                tensors: non_finite.iter().map(ToString::to_string).collect(),
            });
        }
        let missing = |key: &str| ResumeError::NoState {
            path: path.clone(),
            key: key.to_string(),
        };
        let root = &ckpt.root;
        let state = root.get("resume").ok_or_else(|| missing("resume"))?;
        let int = |v: &Value, key: &str| -> Result<u64, ResumeError> {
            v.get_path(key)
                .and_then(Value::as_i64)
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| missing(key))
        };
        let format = state
            .get("format")
            .and_then(Value::as_i64)
            .ok_or_else(|| missing("resume.format"))?;
        if format != FORMAT {
            return Err(ResumeError::Format {
                path,
                found: format,
            });
        }
        let rng = state.get("rng").and_then(Value::as_str).unwrap_or("");
        if rng != RNG_SCHEME {
            return Err(ResumeError::Rng {
                path,
                found: rng.to_string(),
            });
        }
        let finished = match state.get("finished") {
            None | Some(Value::None) => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(Finished::parse)
                    .ok_or_else(|| missing("resume.finished"))?,
            ),
        };
        let text = |key: &str| -> Result<PathBuf, ResumeError> {
            state
                .get(key)
                .and_then(Value::as_str)
                .map(PathBuf::from)
                .ok_or_else(|| missing(&format!("resume.{key}")))
        };
        let metrics = |key: &str| -> Result<EvalMetrics, ResumeError> {
            decode(state.get(key), &ckpt).ok_or_else(|| missing(&format!("resume.{key}")))
        };
        let float = |key: &str| {
            root.get(key)
                .and_then(Value::as_f64)
                .ok_or_else(|| missing(key))
        };
        Ok(Resume {
            epoch0: int(root, "epoch")?,
            seed: int(root, "seed")?,
            epochs: int(state, "epochs").map_err(|_| missing("resume.epochs"))?,
            finished,
            config_path: text("config_path")?,
            cwd: text("cwd")?,
            config: root
                .get("config")
                .cloned()
                .ok_or_else(|| missing("config"))?,
            schedule_origin: int(state, "schedule_origin")
                .map_err(|_| missing("resume.schedule_origin"))?,
            initial: metrics("initial_metrics")?,
            last: metrics("last_metrics")?,
            best_q: float("best_Q")?,
            best_hierarchy: float("best_hierarchy")?,
            epochs_without_improvement: int(root, "epochs_without_improvement")?,
            keep: match state.get("keep") {
                None | Some(Value::None) => None,
                Some(v) => Some(
                    v.as_str()
                        .and_then(|t| crate::manager::keep::Rules::parse(t).ok())
                        .ok_or_else(|| missing("resume.keep"))?,
                ),
            },
            dir: dir.to_path_buf(),
            path,
            ckpt,
        })
    }

    /// The `metrics.jsonl` line of the last trained epoch latest.pt holds.
    pub fn done(&self) -> u64 {
        self.epoch0 + 1
    }

    /// A value of the resume state, decoded from its plain JSON form.
    pub fn decode<T: DeserializeOwned>(&self, key: &str) -> Result<T, ResumeError> {
        decode(self.ckpt.root.get_path(key), &self.ckpt).ok_or_else(|| ResumeError::NoState {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    /// The tensor index under `key`.
    pub fn tensor(&self, key: &str) -> Result<usize, ResumeError> {
        match self.ckpt.root.get_path(key) {
            Some(Value::Tensor(i)) => Ok(*i),
            _ => Err(ResumeError::NoState {
                path: self.path.clone(),
                key: key.to_string(),
            }),
        }
    }

    /// The (key, tensor index) pairs of the dict under `key`, in order.
    pub fn tensor_dict(&self, key: &str) -> Result<Vec<(String, usize)>, ResumeError> {
        let bad = || ResumeError::NoState {
            path: self.path.clone(),
            key: key.to_string(),
        };
        match self.ckpt.root.get_path(key) {
            Some(Value::Dict(items)) => items
                .iter()
                .map(|(k, v)| match (k, v) {
                    (Value::Str(k), Value::Tensor(i)) => Ok((k.clone(), *i)),
                    _ => Err(bad()),
                })
                .collect(),
            _ => Err(bad()),
        }
    }
}

fn decode<T: DeserializeOwned>(v: Option<&Value>, ckpt: &Checkpoint) -> Option<T> {
    serde_json::from_value(to_json(v?, &ckpt.tensors)).ok()
}

/// The dotted keys where two config trees differ (a key on one side only, or another
/// value), in document order.
pub fn config_differences(run: &Value, now: &Value) -> Vec<String> {
    fn walk(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
        let join = |k: &Value| {
            let k = match k {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            if path.is_empty() {
                k
            } else {
                format!("{path}.{k}")
            }
        };
        match (a, b) {
            (Value::Dict(x), Value::Dict(y)) => {
                for (k, va) in x {
                    match y.iter().find(|(kb, _)| kb == k) {
                        Some((_, vb)) => walk(va, vb, &join(k), out),
                        None => out.push(join(k)),
                    }
                }
                for (k, _) in y {
                    if !x.iter().any(|(ka, _)| ka == k) {
                        out.push(join(k));
                    }
                }
            }
            (Value::List(x) | Value::Tuple(x), Value::List(y) | Value::Tuple(y))
                if x.len() == y.len() =>
            {
                for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                    walk(va, vb, &format!("{path}[{i}]"), out);
                }
            }
            _ if a == b => {}
            _ => out.push(if path.is_empty() {
                "<root>".into()
            } else {
                path.to_string()
            }),
        }
    }
    let mut out = Vec::new();
    walk(run, now, "", &mut out);
    out
}

/// metrics.jsonl of a continued run: its lines 0..=`done` kept (the epochs after latest.pt,
/// and a line a kill cut short, are dropped: they are trained again), opened for
/// appending; with the plot's points of the kept lines.
pub fn continue_metrics(
    path: &Path,
    done: u64,
) -> Result<(fs::File, Vec<plot::Point>), ResumeError> {
    let err = |message: String| ResumeError::Metrics {
        path: path.to_path_buf(),
        message,
    };
    let bytes = fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let mut points = Vec::new();
    let mut end = 0usize;
    for (n, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        if n as u64 > done || !line.ends_with(b"\n") {
            break;
        }
        let j: serde_json::Value = serde_json::from_slice(line)
            .map_err(|e| err(format!("line {} is not JSON: {e}", n + 1)))?;
        if j["epoch"].as_u64() != Some(n as u64) {
            return Err(err(format!(
                "line {} is not epoch {n} (the file was edited?)",
                n + 1
            )));
        }
        let f = |v: &serde_json::Value| v.as_f64();
        points.push(plot::Point {
            epoch: n as u64,
            loss: f(&j["loss"]["total"]),
            coverage: f(&j["metrics"]["coverage"]),
            hierarchy: f(&j["metrics"]["hierarchy_b"]),
            q: f(&j["metrics"]["Q"]),
        });
        end += line.len();
    }
    if (points.len() as u64) < done + 1 {
        return Err(err(format!(
            "holds epochs 0–{} only, latest.pt is at epoch {done}",
            points.len() as i64 - 1
        )));
    }
    if end < bytes.len() {
        write_atomic(path, true, |w| {
            w.write_all(&bytes[..end]).map_err(WriteError::from)
        })
        .map_err(|e| err(format!("cannot cut it back to epoch {done}: {e}")))?;
    }
    let file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| err(format!("cannot open it for appending: {e}")))?;
    Ok((file, points))
}

/// Remove the temporary files a killed writer of the run's outputs (the names for which
/// `is_output` holds) left in `dir` (`.latest.pt.tvck-PID-N.tmp`,
/// `.epoch_12.pt.tvck-PID-N.tmp`, …): the continued run is the folder's only writer (it
/// holds the folder's [`super::lock::RunLock`]).
pub fn remove_stale_temporaries(dir: &Path, is_output: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        // `.NAME.tvck-PID-N.tmp`: NAME is everything before the last `.tvck-`.
        let stale = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .and_then(|n| n.rsplit_once(".tvck-"))
            .is_some_and(|(output, _)| is_output(output));
        if stale && e.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seeds_differ_by_epoch_and_seed() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..20 {
            for e in 0..200 {
                let s = epoch_seed(seed, e);
                assert!(s >= 0);
                assert!(seen.insert(s), "seed {seed} epoch {e}");
            }
        }
        assert_eq!(epoch_seed(42, 7), epoch_seed(42, 7));
    }

    #[test]
    fn config_differences_name_dotted_keys() {
        let y = |s: &str| Value::from_yaml(&serde_yaml::from_str(s).unwrap());
        let a = y("model: {name: X, latent_dim: 16}\ntraining: {epochs: 4, lr: 0.1}\nl: [1, 2]\n");
        assert!(config_differences(&a, &a).is_empty());
        let b = y(
            "model: {name: X, latent_dim: 8}\ntraining: {epochs: 9, lr: 0.1, seed: 1}\nl: [1, 3]\n",
        );
        assert_eq!(
            config_differences(&a, &b),
            [
                "model.latent_dim",
                "training.epochs",
                "training.seed",
                "l[1]"
            ]
        );
        let c = y("model: {name: X, latent_dim: 16}\ntraining: {lr: 0.1}\nl: [1, 2, 3]\n");
        assert_eq!(config_differences(&a, &c), ["training.epochs", "l"]);
    }

    #[test]
    fn metrics_are_cut_back_to_the_checkpoint_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let line = |e: u64| {
            format!("{{\"epoch\":{e},\"loss\":{{\"total\":0.5}},\"metrics\":{{\"coverage\":1.0,\"Q\":0.25}}}}\n")
        };
        let full: String = (0..5).map(line).collect();
        // epochs 0–4 and half of epoch 5's line (a kill while it was written)
        std::fs::write(&p, format!("{full}{{\"epoch\":5,\"lo")).unwrap();
        let (mut f, points) = continue_metrics(&p, 2).unwrap();
        assert_eq!(points.len(), 3);
        assert_eq!(points[2].coverage, Some(1.0));
        assert_eq!(points[0].q, Some(0.25));
        f.write_all(line(3).as_bytes()).unwrap();
        drop(f);
        let kept: String = (0..4).map(line).collect();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), kept);
        // fewer lines than the checkpoint's epoch: refused
        let e = continue_metrics(&p, 7).unwrap_err().to_string();
        assert!(
            e.contains("epochs 0–3 only") && e.contains("epoch 7"),
            "{e}"
        );
        std::fs::write(&p, "{\"epoch\":1}\n").unwrap();
        assert!(continue_metrics(&p, 0)
            .unwrap_err()
            .to_string()
            .contains("not epoch 0"));
    }

    #[test]
    fn stale_temporaries_of_the_outputs_only() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            ".latest.pt.tvck-123-0.tmp",
            ".best.pt.tvck-9-4.tmp",
            ".epoch_12.pt.tvck-7-2.tmp",
            ".other.pt.tvck-1-1.tmp",
            ".epoch_x.pt.tvck-1-1.tmp",
            "latest.pt",
            "epoch_12.pt",
        ] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let is_output = |n: &str| {
            ["latest.pt", "best.pt"].contains(&n) || super::super::keep::epoch_of(n).is_some()
        };
        let mut removed: Vec<String> = remove_stale_temporaries(dir.path(), &is_output)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        removed.sort();
        assert_eq!(
            removed,
            [
                ".best.pt.tvck-9-4.tmp",
                ".epoch_12.pt.tvck-7-2.tmp",
                ".latest.pt.tvck-123-0.tmp"
            ]
        );
        for kept in [
            "latest.pt",
            "epoch_12.pt",
            ".other.pt.tvck-1-1.tmp",
            ".epoch_x.pt.tvck-1-1.tmp",
        ] {
            assert!(dir.path().join(kept).exists(), "{kept}");
        }
    }
}
