//! The `tvck` command line: a thin layer over the `tvck` library (see `src/cli/`).
//!
//! Exit codes (README, "Exit codes"; `cli::ExitStatus`): 0 ok; 1 findings (an unsafe
//! pickle global, an unreadable file, a failed check); 2 usage error (bad arguments, a
//! path that does not exist).

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: the pickle trees of many small checkpoints are allocation-heavy (see
/// docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::run(cli::Cli::parse()).into()
}
