//! `tvck eval`: run a checkpoint's model on all 19,683 operations (feature `train`).

use std::path::PathBuf;

use super::diagnostics::CliError;
use super::exit::ExitStatus;

#[derive(clap::Args)]
pub struct Args {
    checkpoint: PathBuf,
    /// Training config for the projection settings (curvature, max radius); default:
    /// the config stored in the checkpoint.
    #[arg(long)]
    config: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Every loss term of the trainer's objective instead of the metrics: the full
    /// batch of 19,683 operations, eval mode, z = mu, weighted as at --epoch (needs
    /// --config for the loss settings).
    #[arg(long, requires = "config")]
    losses: bool,
    /// The 0-based training epoch whose weights apply (phase 2 from
    /// loss.geodesic.phase_start_epoch).
    #[arg(long, default_value_t = 0, requires = "losses")]
    epoch: u64,
    /// Seed of the random pairs (radial margin, rank, geodesic).
    #[arg(long, default_value_t = 0, requires = "losses")]
    seed: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[cfg(not(feature = "train"))]
pub fn run(_: Args) -> Result<ExitStatus, CliError> {
    Err(super::diagnostics::no_train("eval"))
}

#[cfg(feature = "train")]
pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    use super::diagnostics::require_exists;
    use super::output::{emit_json, print_out};
    use super::train::train_error;
    use tvck::report;

    require_exists(&a.checkpoint)?;
    if let Some(c) = &a.config {
        require_exists(c)?;
    }
    let device = tvck::train::parse_device(&a.device).map_err(train_error)?;
    match (a.losses, &a.config) {
        (true, Some(config)) => {
            let r = tvck::train::eval_losses(&a.checkpoint, config, a.epoch, a.seed, device)
                .map_err(train_error)?;
            if a.json {
                emit_json(&r)?;
            } else {
                print_out(&report::eval::render_losses(&r))?;
            }
        }
        _ => {
            let r = tvck::train::eval_checkpoint(&a.checkpoint, a.config.as_deref(), device)
                .map_err(train_error)?;
            if a.json {
                emit_json(&r)?;
            } else {
                print_out(&report::eval::render(&r))?;
            }
        }
    }
    Ok(ExitStatus::Ok)
}
