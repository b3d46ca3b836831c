//! tvck: see, check, compare, migrate and train TernaryVAE checkpoints.
//!
//! The library holds every concern in its own module; `src/main.rs` is a thin CLI.

pub mod arch;
pub mod autofix;
pub mod check;
pub mod config;
pub mod diff;
pub mod discover;
pub mod fingerprint;
pub mod format;
pub mod metrics;
pub mod migrate;
pub mod monitor;
pub mod report;
pub mod scan;
#[cfg(feature = "train")]
pub mod train;
pub mod yamledit;
