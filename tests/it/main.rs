//! The integration tests, as one binary (one link, one run): a module per command or
//! concern, sharing `common` (running the binary, the PyTorch environment, the snapshot
//! macros `snap!` and `snap_run!`, which record exit code, stdout and stderr together).
//! Snapshots live in snapshots/ at the repository root.
//!
//! Run one module with a filter: `cargo test --test it -- check_cli::`.

#[macro_use]
#[allow(dead_code)]
mod common;

mod arch_api;
mod architecture;
mod attack_corpus;
mod check_cli;
mod cli;
mod convert_cli;
mod convert_ops;
mod deflate_budget;
mod fit_cli;
mod fs_faults_cli;
mod init_cli;
mod lazy_reads;
mod legacy_tar;
mod manager_cli;
mod manager_index;
mod manager_prune;
mod manager_select;
mod non_regular_cli;
mod prune_cli;
mod pytorch_crosscheck;
mod reader;
mod report_cli;
mod serve_browser;
mod serve_cli;
mod torch_differentials;
mod train_cli;
mod train_monitor_cli;
mod train_resume_cli;
mod usage_cli;
mod watch_cli;
mod writer_roundtrip;
