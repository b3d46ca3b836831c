//! What `tvck serve` and `tvck report` show of training runs (docs/monitoring.md): a run
//! folder's curves kept as compact columns ([`series`]), its config files and checkpoints
//! with `tvck inspect`'s data ([`detail`]), the live state of every run under a folder
//! followed with the monitor's incremental reader ([`runs`]), and the read-only HTTP
//! server with its JSON API and server-sent events ([`server`], [`http`]; docs/json.md).
//!
//! Nothing here writes in a runs folder: the monitors' [`crate::monitor::RunView`] reads
//! by byte offset, checkpoints are opened read-only, and the page's assets are embedded
//! in the binary.

pub mod detail;
pub mod http;
pub mod runs;
pub mod series;
pub mod server;

pub use detail::{CheckpointRow, ConfigFile, RunDetail};
pub use runs::{RunSummary, Runs};
pub use series::Series;
pub use server::{Server, ServerOptions};

use std::path::PathBuf;

/// Why the dashboard could not start or read a run.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error("{}: no {} (not a run folder)", .0.display(), crate::monitor::METRICS_FILE)]
    NotARun(PathBuf),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Monitor(#[from] crate::monitor::MonitorError),
}

impl DashboardError {
    pub fn hint(&self) -> &'static str {
        match self {
            DashboardError::Io { .. } => "check the folder's path and permissions",
            DashboardError::NotAFolder(_) => "name the folder that holds the run folders",
            DashboardError::NotARun(_) => {
                "a run folder holds the metrics.jsonl the trainer writes (one JSON line per epoch)"
            }
            DashboardError::Bind { .. } => {
                "the port may be in use or reserved: choose another one, or 0 for any free port"
            }
            DashboardError::Monitor(e) => e.hint(),
        }
    }
}
