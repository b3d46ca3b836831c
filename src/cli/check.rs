//! `tvck check`: validate a training config before a job starts; `--auto-fix`.

use std::path::{Path, PathBuf};

use tvck::autofix;
use tvck::check::{self, CheckOptions};
use tvck::config::TrainingConfig;
use tvck::report;

use super::diagnostics::{require_exists, CliError};
use super::exit::ExitStatus;
use super::output::{emit_json, print_out};

#[derive(clap::Args)]
pub struct Args {
    config: PathBuf,
    /// Extra folder to resolve a relative frozen_checkpoint.path against (repeatable).
    #[arg(long = "checkpoint-root", value_name = "DIR")]
    checkpoint_roots: Vec<PathBuf>,
    /// Also list config keys tvck does not model.
    #[arg(long)]
    strict: bool,
    /// Search for fitting checkpoints and print the config fix as a diff.
    #[arg(long)]
    auto_fix: bool,
    /// With --auto-fix: apply the fix (keeps CONFIG.bak; atomic replace).
    #[arg(long, requires = "auto_fix")]
    write: bool,
    /// With --auto-fix: evaluate every candidate (about a second each) and rank by the
    /// measured coverage (needs the `train` feature).
    #[arg(long, requires = "auto_fix")]
    measure: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn load(path: &Path) -> Result<TrainingConfig, CliError> {
    TrainingConfig::load(path).map_err(|e| CliError::failure_with(e.to_string(), e.hint()))
}

pub fn run(a: Args) -> Result<ExitStatus, CliError> {
    require_exists(&a.config)?;
    let measurer = if a.measure { Some(measurer()?) } else { None };
    let cfg = load(&a.config)?;
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::failure(format!("cannot read the working directory: {e}")))?;
    let opts = CheckOptions {
        checkpoint_roots: a.checkpoint_roots,
        cwd,
        strict: a.strict,
    };
    let report = check::check(&cfg, &opts);
    let fix = a
        .auto_fix
        .then(|| autofix::propose(&cfg, &report, &opts, measurer.as_deref()));
    let mut backup = None;
    let mut after = None;
    if let (true, Some(new_text)) = (a.write, fix.as_ref().and_then(|f| f.new_text.as_deref())) {
        let bak = autofix::write_fix(&a.config, new_text).map_err(|e| {
            CliError::failure_with(
                e.to_string(),
                e.hint()
                    .unwrap_or_else(|| "apply the diff above by hand".into()),
            )
        })?;
        backup = Some(bak);
        after = Some(check::check(&load(&a.config)?, &opts));
    }
    if a.json {
        emit_json(&report::check::CheckJson {
            report: &report,
            auto_fix: fix.as_ref(),
            backup: backup.as_deref(),
            after_write: after.as_ref(),
        })?;
    } else {
        let mut text = report::check::render(&report);
        if let Some(f) = &fix {
            text.push_str(&report::check::render_autofix(f, backup.as_deref()));
        }
        if let Some(a) = &after {
            text.push_str(&format!("\nAfter the fix: {}\n", a.verdict()));
        }
        print_out(&text)?;
    }
    let final_report = after.as_ref().unwrap_or(&report);
    Ok(ExitStatus::failure_if(!final_report.ok()))
}

/// The trainer's evaluation, for `check --auto-fix --measure`.
#[cfg(feature = "train")]
fn measurer() -> Result<Box<dyn autofix::Measure>, CliError> {
    Ok(Box::new(tvck::train::measure::EvalMeasure {
        device: tch::Device::Cpu,
    }))
}

#[cfg(not(feature = "train"))]
fn measurer() -> Result<Box<dyn autofix::Measure>, CliError> {
    Err(super::diagnostics::no_train("check --auto-fix --measure"))
}
