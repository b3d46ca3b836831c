//! `tvck export-tb RUN_DIR [-o DIR]`: a TensorBoard event file of a run's metrics.jsonl.

use std::path::PathBuf;

use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::output::{emit_json, print_out};

#[derive(clap::Args)]
pub struct Args {
    /// A run folder (holding metrics.jsonl; written by `tvck train` or another tool).
    run: PathBuf,
    /// Folder for the event file [default: RUN_DIR].
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    require_exists(&a.run)?;
    let e = tvck::monitor::tensorboard::export(&a.run, a.out.as_deref())
        .map_err(|e| CliError::failure_with(e.to_string(), e.hint()))?;
    if a.json {
        emit_json(&e)?;
    } else {
        print_out(&format!(
            "wrote {}: {} epoch{}, {} scalars{}\n",
            e.file.display(),
            e.epochs,
            if e.epochs == 1 { "" } else { "s" },
            e.scalars,
            if e.skipped > 0 {
                format!(" ({} lines of metrics.jsonl not read)", e.skipped)
            } else {
                String::new()
            }
        ))?;
    }
    Ok(ExitStatus::Ok)
}
