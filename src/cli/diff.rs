//! `tvck diff`: two checkpoints (or a checkpoint and a layout) key by key.

use std::path::PathBuf;

use tvck::diff::{self, Side};
use tvck::report;

use super::args::Version;
use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::inspect::open_checkpoint;
use super::output::{emit_json, print_out};

#[derive(clap::Args)]
pub struct Args {
    /// First checkpoint.
    a: PathBuf,
    /// Second checkpoint (or use --arch / --config).
    #[arg(required_unless_present_any = ["arch", "config"], conflicts_with_all = ["arch", "config"])]
    b: Option<PathBuf>,
    /// Compare A with a catalog layout instead.
    #[arg(long, value_name = "VERSION", value_enum, conflicts_with = "config")]
    arch: Option<Version>,
    /// Compare A with the model a training config builds.
    #[arg(long, value_name = "CONFIG")]
    config: Option<PathBuf>,
    /// Only keys under this prefix (e.g. `encoder_A`).
    #[arg(long, value_name = "PREFIX")]
    only: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    let ca = open_checkpoint(&a.a)?;
    let cb;
    let side_b = match (&a.b, a.arch, &a.config) {
        (Some(b), _, _) => {
            cb = open_checkpoint(b)?;
            Side::Checkpoint(&cb)
        }
        (None, None, Some(path)) => {
            require_exists(path)?;
            let cfg = tvck::config::TrainingConfig::load(path)
                .map_err(|e| CliError::failure_with(e.to_string(), e.hint()))?;
            diff::config_side(&cfg).ok_or_else(|| {
                CliError::usage(
                    format!("{}: model.name is missing or not a model class tvck knows", path.display()),
                    "set model.name (TernaryVAEV5_11, TernaryVAEV5_11_PartialFreeze or TernaryVAEV5_12)",
                )
            })?
        }
        (None, Some(Version(id)), _) => diff::arch_side(id, Some(&ca)),
        (None, None, None) => {
            return Err(CliError::usage(
                "nothing to compare A with",
                "give a second checkpoint, --arch VERSION or --config CONFIG.yaml",
            ))
        }
    };
    let report = diff::diff(&Side::Checkpoint(&ca), &side_b, a.only.as_deref());
    if a.json {
        emit_json(&report)?;
    } else {
        print_out(&report::diff::render(&report))?;
    }
    Ok(ExitStatus::failure_if(
        report.has_differences() || report.is_unsafe(),
    ))
}
