//! Live monitoring of training runs (docs/monitoring.md): the alert rules over
//! `metrics.jsonl` lines ([`rules`]), followed incrementally by byte offset ([`reader`]),
//! alerts and `alerts.jsonl` ([`alert`]), their delivery to a command or a webhook
//! ([`deliver`]), run folders and the trainer's hook ([`run`]), a run's state for the
//! monitors ([`summary`]) and TensorBoard event files ([`tensorboard`]).
//!
//! The rules read only what a metrics.jsonl line holds, so they work on runs written by
//! other tools that write the same lines; the trainer evaluates the same rules every epoch.

pub mod alert;
pub mod deliver;
pub mod line;
pub mod reader;
pub mod rules;
pub mod run;
pub mod summary;
pub mod tensorboard;

pub use alert::{Alert, AlertLog, Severity, ALERTS_FILE};
pub use deliver::{Delivery, DeliveryError};
pub use line::EpochLine;
pub use reader::{Follower, METRICS_FILE};
pub use rules::{Engine, Settings};
pub use run::{find_runs, RunInfo, RunState, RunView, TrainMonitor};
pub use summary::{AlertState, RunEvent, RunSummary};

use std::path::PathBuf;

/// Why monitoring could not read or write a run's files.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("{}: a line the monitor cannot read: {message}", .path.display())]
    Line { path: PathBuf, message: String },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl MonitorError {
    pub fn hint(&self) -> &'static str {
        match self {
            MonitorError::Io { .. } => "check the run folder's path and permissions",
            MonitorError::NotAFile(_) => "metrics.jsonl must be a regular file",
            MonitorError::Line { .. } => {
                "each metrics.jsonl line is one JSON object with an `epoch` (docs/json.md)"
            }
            MonitorError::Config(e) => e.hint(),
        }
    }
}

/// The settings of `--alerts FILE`: its `monitoring:` section (a training config works
/// too), merged over the run config's.
pub fn load_alerts_file(file: &std::path::Path) -> Result<crate::config::Monitoring, MonitorError> {
    let cfg = crate::config::TrainingConfig::load(file)?;
    Ok(cfg.monitoring.clone().unwrap_or_default())
}

#[cfg(test)]
mod tests;
