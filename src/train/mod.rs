//! The libtorch trainer (cargo feature `train`): `tvck eval` and `tvck train`.
//!
//! * [`model`]: the TernaryVAE modules built from a version's layout, their variables
//!   named exactly as the state_dict keys.
//! * [`load`]: checkpoint (tvck's reader) → VarStore; [`save`]: VarStore → `.pt` (tvck's
//!   writer), loadable by `torch.load(weights_only=True)`.
//! * [`data`], [`metrics`], [`losses`], [`optim`], [`homeostasis`]: the pieces of
//!   training.md; [`trainer`]: the validated flow; [`plot`]: the per-epoch plot;
//!   [`resume`]: what latest.pt stores for `tvck train --resume` and how it is read back.
//! * [`eval`]: coverage and the radius metrics of a checkpoint; [`measure`]: the same as
//!   the checkers' `Measure` (`check --auto-fix --measure`).
//! * [`monitor`]: the per-epoch hook of the alert rules, run.json, TensorBoard, and the
//!   frozen parts' hashes.

pub mod data;
pub mod eval;
pub mod fit;
pub mod homeostasis;
pub mod keep;
pub mod load;
pub mod lock;
pub mod losses;
pub mod measure;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod optim;
pub mod plot;
pub mod resume;
pub mod save;
pub mod trainer;

pub use eval::{eval_checkpoint, eval_losses, EvalReport, LossReport};
pub use trainer::{train, Step, StepStatus, TrainOptions, TrainReport, DEFAULT_SEED};

/// Why evaluation or training stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Bad arguments (unknown device, CUDA not available, …).
    #[error("{0}")]
    Usage(String),
    /// A checklist step refused to go on (config invalid, incompatible checkpoint,
    /// critical initial coverage, …): `step` is its number.
    #[error("step {step} ({name}) failed: {message}")]
    Refused {
        step: u8,
        name: &'static str,
        message: String,
    },
    /// The checkpoint could not be read or does not fit.
    #[error("{0}")]
    Load(String),
    /// The model could not be built.
    #[error("model: {0}")]
    Model(String),
    /// Writing an output failed.
    #[error("cannot save: {0}")]
    Save(String),
    /// The checkpoint cannot be read.
    #[error(transparent)]
    Read(#[from] crate::format::ReadError),
    /// A tensor of the checkpoint cannot be read.
    #[error("{0}")]
    Format(#[from] crate::format::FormatError),
    /// The architecture parameters do not fit the version.
    #[error("model: {0}")]
    Arch(#[from] crate::arch::ArchError),
    /// Writing a checkpoint failed.
    #[error("cannot save: {}: {source}", path.display())]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: crate::format::write::WriteError,
    },
    /// A file-system step on an output failed.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing to an output file failed.
    #[error("{}: {source}", path.display())]
    Output {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Any other I/O failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A run cannot be continued.
    #[error(transparent)]
    Resume(#[from] resume::ResumeError),
    /// The run's monitoring files (run.json, alerts.jsonl, the event file).
    #[error(transparent)]
    Monitor(#[from] crate::monitor::MonitorError),
    /// Another process is training into the same run folder.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
}

impl TrainError {
    /// What to do about it, where there is more to say than the message.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            TrainError::Resume(e) => Some(e.hint()),
            TrainError::Monitor(e) => Some(e.hint()),
            TrainError::Lock(e) => Some(e.hint()),
            _ => None,
        }
    }
}

/// `cpu` or `cuda` (`cuda:N`) as a tch device.
pub fn parse_device(s: &str) -> Result<tch::Device, TrainError> {
    match s {
        "cpu" => Ok(tch::Device::Cpu),
        _ if s == "cuda" || s.starts_with("cuda:") => {
            let n: usize = s
                .strip_prefix("cuda:")
                .map(|n| n.parse())
                .transpose()
                .map_err(|_| TrainError::Usage(format!("bad device `{s}`")))?
                .unwrap_or(0);
            if !tch::Cuda::is_available() {
                return Err(TrainError::Usage(
                    "device `cuda`: CUDA is not available to libtorch on this machine".into(),
                ));
            }
            Ok(tch::Device::Cuda(n))
        }
        _ => Err(TrainError::Usage(format!(
            "unknown device `{s}` (cpu, cuda, cuda:N)"
        ))),
    }
}
