//! `tvck inspect`: one checkpoint whole.

use std::path::{Path, PathBuf};

use tvck::format::Checkpoint;
use tvck::report;

use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::output::{emit_json, print_out};

#[derive(clap::Args)]
pub struct Args {
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Do not hash tensors.
    #[arg(long)]
    no_hash: bool,
}

pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    require_exists(&a.file)?;
    if a.file.is_dir() {
        return Err(CliError::usage(
            format!("{} is a folder", a.file.display()),
            format!("use `tvck scan {}` for folders", a.file.display()),
        ));
    }
    let ckpt = open_checkpoint(&a.file)?;
    let r = report::inspect::build(&ckpt, &a.file.display().to_string(), !a.no_hash);
    if a.json {
        emit_json(&r)?;
    } else {
        print_out(&report::inspect::render(&r))?;
    }
    Ok(ExitStatus::failure_if(r.has_findings()))
}

/// Open a checkpoint for a command that needs one whole (inspect, diff).
pub fn open_checkpoint(file: &Path) -> Result<Checkpoint, CliError> {
    require_exists(file)?;
    Checkpoint::open(file).map_err(|e| {
        CliError::failure_with(
            e.to_string(),
            "tvck reads torch.save files (zip or legacy) and .safetensors; the file may be damaged or not a checkpoint",
        )
    })
}
