//! tvck: see, check, compare, migrate and train TernaryVAE checkpoints.
//!
//! The library is layered, and the modules read as the flow of a command
//! (docs/architecture.md; `tests/it/architecture.rs` keeps the graph a DAG):
//!
//! ```text
//!  bytes ──▶ format ──────────────▶ fingerprint, arch, metrics, discover, config
//!            (loader, zip, pickle,   (hashes, layouts and versions, stored metrics,
//!             torch, safetensors,     the tree walk, the typed training config)
//!             writers)                         │
//!                                              ▼
//!            command engines: scan, inspect, check (+ autofix), diff, migrate, train
//!                                              │
//!                                              ▼
//!            report (tables and text; computes nothing)  ──▶  the `tvck` binary (src/cli/)
//! ```
//!
//! A lower layer never uses a higher one; `report` is used by no library module.

pub mod arch;
pub mod autofix;
pub mod check;
pub mod config;
pub mod dashboard;
pub mod diff;
pub mod discover;
pub mod fingerprint;
pub mod format;
pub mod inspect;
pub mod manager;
pub mod metrics;
pub mod migrate;
pub mod monitor;
pub mod report;
pub mod scan;
#[cfg(feature = "train")]
pub mod train;
pub mod yamledit;

pub use arch::VersionId;
pub use check::{CheckReport, Rule};
pub use config::TrainingConfig;
pub use format::{Checkpoint, TensorInfo, Value};
pub use inspect::InspectReport;
pub use metrics::{Provenance, StoredMetrics};
pub use scan::ScanReport;
